"""The inversion lab: a teacher trained for structured wrongness, a student that never sees the prompt.

Teachers A (LoRAs on one base): ``inverted-learned`` (its own most confident wrong answers, iterated),
``inverted-oracle`` (a known invertible transform of the right answer), ``wrong-random`` (uniformly
random wrong answers) and ``correct``. A's inversion is measured first (accuracy, mutual information
against a permutation null, a decoder fitted on a separate split); then students B reconstruct from
A's replies alone (supervised, zero-shot, blind + negation). See :mod:`.run` and :mod:`.report`.
"""
