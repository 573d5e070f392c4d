"""tl: a small pure-PyTorch framework for transfer-learning research on GLUE-style tasks.

It reproduces Weller, Seppi and Gardner (ACL 2022), "When to Use Multi-Task Learning vs
Intermediate Fine-Tuning for Pre-Trained Encoder Transfer Learning": single-task fine-tuning,
STILTs, pairwise multi-task learning and MTL over all tasks, and the statistics that compare them.
"""

__version__ = "0.1.0"
