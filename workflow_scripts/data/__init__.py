"""Images in: dataset sources (digits, Fashion-MNIST, CIFAR-100, Oxford-102, the user's folders), downloads with
checksums, safe archive extraction and pickle reading, the prepared ``.npz`` splits and their batches.
"""
