"""Constants shared by data, models, losses and metrics."""

IGNORE_INDEX = 255  # unlabelled pixel in every mask target

# special tokens of the caption vocabulary (reference order)
NULL, UNK, START, END = 0, 1, 2, 3
SPECIALS = ("<NULL>", "<UNK>", "<START>", "<END>")

# the joint recipe's datasets: the model's default heads (every dataset's facts: changeagent.data.registry)
DATASETS = ("levir_mci", "second_cc")
NUM_CLASSES = {"levir_mci": 3, "second_cc": 7}
LEVIR_CLASSES = ("background", "road", "building")
SECOND_CLASSES = ("unchanged", "water", "ground", "low_vegetation", "tree", "building", "playground")

# reference normalisation of LEVIR-MCI (RGB, fraction of 255)
LEVIR_MEAN = (0.39073, 0.38623, 0.32989)
LEVIR_STD = (0.15329, 0.14628, 0.13648)

# the five no-change sentences of LEVIR-MCI (SPEC §1.1), canonical one last
NO_CHANGE_SENTENCES = (
    "there is no difference",
    "the two scenes seem identical",
    "the scene is the same as before",
    "no change has occurred",
    "almost nothing has changed",
)
CANONICAL_NO_CHANGE = "the scene is the same as before"
