"""Channels: 「联系我」 QR codes, the ``state`` that ties an add back to one, and their welcomes."""
