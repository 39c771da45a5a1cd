"""Torch checkpoint files with a hand-written object pickle, in both
formats (for the hostile-checkpoint tests)."""
import io
import pickle
import zipfile

import torch


def zip_checkpoint(data_pkl):
    """A torch zip checkpoint whose ``data.pkl`` is ``data_pkl``."""
    template, out = io.BytesIO(), io.BytesIO()
    torch.save({}, template)
    template.seek(0)
    with zipfile.ZipFile(template) as src, \
            zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith('/data.pkl'):
                data = data_pkl
            dst.writestr(info.filename, data)
    return out.getvalue()


def legacy_checkpoint(main_pkl, in_header=False):
    """A legacy (non-zip) torch checkpoint whose object pickle is
    ``main_pkl``; ``in_header`` puts it where torch reads the magic number
    (with ``pickle_module.load``)."""
    parts = [
        pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2),
        pickle.dumps(torch.serialization.PROTOCOL_VERSION, protocol=2),
        pickle.dumps(dict(protocol_version=1001, little_endian=True,
                          type_sizes=dict(short=2, int=4, long=4)),
                     protocol=2), main_pkl,
        pickle.dumps([], protocol=2)
    ]
    if in_header:
        parts[0] = main_pkl
    return b''.join(parts)


def checkpoint_with_pickle(data_pkl, form):
    """:func:`zip_checkpoint` or :func:`legacy_checkpoint` by ``form``."""
    if form == 'zip':
        return zip_checkpoint(data_pkl)
    return legacy_checkpoint(data_pkl)
