"""tl.study: the paper's study, built only on the library's public functions (plan and run the grid,
read the scores, the report, the figures). Nothing in the library imports it."""
