"""Built-in prompt sets for effective information on a language model (written for this project).

Each prompt is plain text whose next token the model predicts (no chat template): the
interventions' effect is read on that one next token. Three kinds of context, 16 each, so
that a result can be checked for holding across kinds rather than in one.
"""

from __future__ import annotations

PROMPT_SETS: dict[str, tuple[str, ...]] = {
    "feelings": (
        "Today I feel", "When I woke up this morning I was", "After the long week, she felt",
        "The news made him", "Walking home in the rain, I felt", "My friend's letter left me",
        "At the end of the match the players were", "Looking at the old photos, we felt",
        "The children opened their presents and were", "When the results came, the students were",
        "Alone in the empty house, he felt", "The music at the party made everyone",
        "After the argument, I was", "Seeing the sea again, she was", "The long wait made the passengers",
        "On my birthday I was",
    ),
    "facts": (
        "The capital of France is", "Water boils at a temperature of", "The largest planet in the solar system is",
        "The chemical symbol for gold is", "The first man on the moon was", "The longest river in Africa is",
        "A triangle has three", "The speed of light is about", "Photosynthesis takes place in the",
        "The author of Hamlet is", "The currency of Japan is the", "The tallest mountain on Earth is",
        "The human heart has four", "The Pacific Ocean is the", "Ice is the solid form of",
        "The inventor of the telephone was",
    ),
    "stories": (
        "Once upon a time, in a small village, there lived a", "The door creaked open and", "She picked up the phone and",
        "In the middle of the night, the dog", "The old captain looked at the map and", "When the train stopped,",
        "The detective knelt beside the", "At the top of the stairs stood a", "The letter was signed by",
        "He opened the box and found a", "The storm had passed, and the village", "Nobody expected the king to",
        "The robot turned its head and", "Deep in the forest, the children found", "The last thing I remember is",
        "On the first day of school, the teacher",
    ),
}
"""Set name → prompts."""

__all__ = ["PROMPT_SETS"]
