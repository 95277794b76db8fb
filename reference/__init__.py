"""Pure NumPy reference of the article "a CNN from scratch with NumPy".

One module per article stage (patches, conv, activations, flatten, dense, loss, update),
`model` for the whole network, `layout` for every framework layout conversion, `data` for
MNIST. Only NumPy and the standard library are imported here (a test enforces it).
"""
