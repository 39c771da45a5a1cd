from .real_accuracy import ImageNetReaLAccuracy, load_real_labels

__all__ = ['ImageNetReaLAccuracy', 'load_real_labels']
