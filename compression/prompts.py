"""The user instructions that start the teacher's own chat-formatted calibration text.

An instruct model's distribution is its answers to requests, so the sampled text starts from a
request (put through the tokenizer's chat template) rather than from a bare BOS token. The
list is ours, short and varied on purpose: stories, explanations, how-tos, letters, lists,
code, facts, maths, advice, summaries. Text sampled from the model itself follows LLM-QAT's
data-free calibration (Liu et al. 2023, arXiv 2305.17888, section 2.1); starting it from
instructions is what chat models are tuned on (SlimOrca's prompts in Lillama's calibration).

Changing the list changes the sampled text: bump ``PROMPTS_VERSION`` (a key of the worker's
sample cache) with every edit. None shares four words in a row with the fixed prompts every job
answers (``slimforge.compression.generations``): the text a student is shown with must not be
one it was calibrated on (version 2 reworded three that did). Torch-free.
"""

from __future__ import annotations

__all__ = ["PROMPTS", "PROMPTS_VERSION"]

PROMPTS_VERSION = 2

PROMPTS: tuple[str, ...] = (
    # stories and creative writing
    "Tell the tale of a baker who finds a letter hidden in a sack of flour.",
    "Tell a bedtime story about a fox who is afraid of the dark.",
    "Write a poem about the first snow of winter.",
    "Describe a busy market in a small coastal town on a Saturday morning.",
    "Write the opening paragraph of a mystery novel set on a train.",
    "Write a dialogue between a grandmother and her grandson about learning to cook.",
    "Invent a fairy tale about a king who could not stop laughing.",
    "Describe a sunset over the desert to someone who has never seen one.",
    # explanations
    "Explain how photosynthesis works in simple terms.",
    "Why is the sky blue?",
    "Explain what inflation is and why it matters to ordinary people.",
    "How do vaccines help the body fight disease?",
    "Explain the difference between weather and climate.",
    "What causes the seasons on Earth?",
    "Explain how a bill becomes a law in a parliamentary democracy.",
    "How does the internet send a message from one computer to another?",
    "Explain what a black hole is.",
    "Why do we dream? Summarise what scientists think.",
    # how-tos
    "What is an easy recipe for tomato soup?",
    "Give me step-by-step instructions to change a flat bicycle tire.",
    "How can I start a small vegetable garden on a balcony?",
    "How do I prepare for a job interview?",
    "Explain how to plant a tree so that it grows well.",
    "What is the best way to learn a new language as an adult?",
    "How do I write a good cover letter?",
    "How can I improve my sleep?",
    # letters and messages
    "Write a polite email to a landlord asking to fix a leaking tap.",
    "Write a thank-you note to a teacher at the end of the school year.",
    "Write a letter to a friend describing your recent trip to the mountains.",
    "Write a short speech for a friend's wedding.",
    "Write a complaint letter about a delayed train journey.",
    "Draft a message inviting neighbours to a street party.",
    # lists
    "List ten ideas for a rainy weekend with children.",
    "Give me a packing list for a three-day camping trip.",
    "List the main causes of the First World War.",
    "What are five healthy breakfast ideas?",
    "Name some famous inventions of the nineteenth century and what they changed.",
    "List the planets of the solar system with one fact about each.",
    # code
    "Write a Python function that checks whether a word is a palindrome.",
    "Explain what a for loop is, with an example in Python.",
    "Write a JavaScript function that returns the largest number in an array.",
    "What is the difference between a list and a dictionary in Python?",
    "Write a SQL query that counts orders per customer.",
    "Explain recursion to a beginner programmer.",
    # facts and history
    "Tell me about the history of the printing press.",
    "Who was Marie Curie and what did she discover?",
    "What were the main achievements of the Roman Empire?",
    "Describe the water cycle.",
    "Why was Canberra chosen as the seat of Australia's government?",
    "Tell me some interesting facts about octopuses.",
    "How did the Industrial Revolution change everyday life?",
    # maths and reasoning
    "What is 15% of 240? Show your working.",
    "Explain the Pythagorean theorem with an example.",
    "A train travels 180 kilometres in 2 hours. What is its average speed?",
    "How do you calculate the area of a circle?",
    "If I save 50 dollars a month, how much will I have after three years?",
    "Explain what a prime number is and list the first ten.",
    # advice, opinion, summaries
    "What are the pros and cons of working from home?",
    "Give me advice on how to manage stress during exams.",
    "Summarise the plot of Romeo and Juliet in a few sentences.",
    "Compare cats and dogs as pets.",
    "What should I consider when buying a used car?",
    "Suggest a weekly budget plan for a student.",
    "Describe the benefits of regular exercise.",
)
