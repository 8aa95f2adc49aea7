"""The results schema shared by simulated and measured runs (``results``) and the markdown
report with plots (``report``)."""
