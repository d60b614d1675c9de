"""How a document becomes model inputs: row checks (documents.py), the InputSpec (spec.py), block padding (collate.py).

Below the tasks and the DataModule, so that every reader of documents (training, predict, evidence, the
estimate) can use it.
"""
