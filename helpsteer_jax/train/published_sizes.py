"""Training-split sizes of the HelpSteer data sets as their cards publish them, in the examples the
project's builders make of them: what a recipe stated in epochs runs for when the data is not at
hand (planning a 70B run). A run with the data counts its real examples instead (run_length.py).

Sources: the nvidia/HelpSteer2 and nvidia/HelpSteer3 dataset cards. HelpSteer2: 21,362 rows,
train 20,324 / validation 1,038. HelpSteer3 gives totals and a 95% / 5% train / validation split
for Feedback, Edit and Edit-Quality (train = round(0.95 x total)); Preference's loading snippet
gives train 38,459.
"""

from __future__ import annotations

HELPSTEER2_TRAIN_ROWS = 20_324
HELPSTEER3_FEEDBACK_TRAIN_ROWS = round(0.95 * 40_821)  # 38,780
HELPSTEER3_EDIT_TRAIN_ROWS = round(0.95 * 14_461)  # 13,738
HELPSTEER3_EDIT_QUALITY_TRAIN_ROWS = round(0.95 * 3_274)  # 3,110
HELPSTEER3_PREFERENCE_TRAIN_ROWS = 38_459

# Examples per row of the builders (data/helpsteer2.py, data/helpsteer3.py), at most: a feedback
# row has 2 responses with up to 3 feedbacks each; an edit row's 3 feedbacks in all 3! = 6 orders;
# an edit-quality row gives (bad edit, good edit) and (original, good edit).
FEEDBACK_EXAMPLES_PER_ROW = 6
EDIT_EXAMPLES_PER_ROW = 6
EDIT_QUALITY_PAIRS_PER_ROW = 2

EXPECTED_TRAIN_EXAMPLES = {
  "helpsteer2_attributes": HELPSTEER2_TRAIN_ROWS,
  "helpsteer2_steerlm_sft": HELPSTEER2_TRAIN_ROWS,
  "helpsteer3_feedback": HELPSTEER3_FEEDBACK_TRAIN_ROWS * FEEDBACK_EXAMPLES_PER_ROW,  # 232,680
  "helpsteer3_edit": HELPSTEER3_EDIT_TRAIN_ROWS * EDIT_EXAMPLES_PER_ROW,  # 82,428
  "helpsteer3_edit_quality": HELPSTEER3_EDIT_QUALITY_TRAIN_ROWS * EDIT_QUALITY_PAIRS_PER_ROW,  # 6,220
  "helpsteer3_preference": HELPSTEER3_PREFERENCE_TRAIN_ROWS,  # ties are dropped: an upper bound
}


def expected_train_examples(dataset: str) -> int:
  """The published training examples of `dataset` (0 when its card gives no size)."""
  return EXPECTED_TRAIN_EXAMPLES.get(dataset, 0)
