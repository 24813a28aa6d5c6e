"""One module per paper: the paper's method as small named steps plus one entry point.

``xattr_nb.methods.<slug>`` pairs with ``notebooks/NN_<slug>.ipynb`` and
``tests/methods/test_<slug>.py``; the notebook calls the steps one by one, users call the entry point.
"""
