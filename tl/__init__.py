"""tl: a small pure-PyTorch framework for transfer-learning research on GLUE-style tasks, reproducing
Weller, Seppi and Gardner (ACL 2022), "When to Use Multi-Task Learning vs Intermediate Fine-Tuning for
Pre-Trained Encoder Transfer Learning": single-task fine-tuning, STILTs, pairwise MTL and MTL over all
tasks, and the statistics that compare them. The library is the files of this folder; the paper's study,
built on them, is `tl.study`. Imports no tl file.
"""
__version__ = "0.1.0"
