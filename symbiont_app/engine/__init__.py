"""The app's engine side: one thread that owns the model (:mod:`.worker`), the requests it serves
(:mod:`.handlers`, one package per feature), and what it holds (:mod:`.state`). Qt-free."""
