"""The lab's manifests/ and notebooks/, shipped inside the wheel (symbolic links in a checkout).

``pip install .`` alone then gives a working ``labctl render`` and ``labctl lab run``; in a
checkout :func:`labutils.config.lab_files_root` uses the folders themselves.
"""
