"""maskkit.safe_load: detectron2 .pth/.pkl read without running pickled code."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from maskkit.errors import MaskkitError
from maskkit.safe_load import read_state_dict


class _Payload:
    """Unpickling this object calls ``open(target, "w")``: the file would appear if it ran."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pkl_numpy_state_dict(tmp_path, protocol):
    sd = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b.bias": np.ones(4, dtype=np.float64)}
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as fh:
        pickle.dump(
            {"model": sd, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}, fh, protocol=protocol
        )
    out = read_state_dict(path)
    assert set(out) == set(sd)
    assert torch.equal(out["a.weight"], torch.from_numpy(sd["a.weight"]))
    assert out["b.bias"].dtype == torch.float64


def test_pth_detectron2_wrapper(tmp_path):
    sd = {"x": torch.randn(3, 2), "y": torch.zeros(5)}
    path = tmp_path / "model_final.pth"
    torch.save({"model": sd, "iteration": 90000, "optimizer": {"state": {}}}, path)
    out = read_state_dict(path)
    assert set(out) == {"x", "y"} and torch.equal(out["x"], sd["x"])


@pytest.mark.parametrize("protocol", [2, 4])
def test_pkl_code_payload_refused_and_not_run(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"model": {"w": np.zeros(2, np.float32), "x": _Payload(marker)}}, fh, protocol=protocol)
    # Sanity: the payload really runs under the ordinary unpickler (on a copy of the target).
    other = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(other)))
    assert other.exists()
    with pytest.raises(MaskkitError, match=r"evil\.pkl.*refused.*(builtins|io)\.open"):
        read_state_dict(path)
    assert not marker.exists()


def test_pth_code_payload_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        torch.save({"model": {"w": torch.zeros(2)}, "extra": _Payload(marker)}, fh)
    with pytest.raises(MaskkitError, match=r"evil\.pth.*refused"):
        read_state_dict(path)
    assert not marker.exists()


def test_bad_files(tmp_path):
    with pytest.raises(MaskkitError, match="no such file"):
        read_state_dict(tmp_path / "missing.pkl")
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(MaskkitError, match=r"junk\.pkl: unreadable pickle"):
        read_state_dict(junk)
    odd = tmp_path / "w.bin"
    odd.write_bytes(b"")
    with pytest.raises(MaskkitError, match="unknown weights format"):
        read_state_dict(odd)
    strings = tmp_path / "s.pkl"
    strings.write_bytes(pickle.dumps({"model": {"a": "text"}}))
    with pytest.raises(MaskkitError, match="'a' is a str"):
        read_state_dict(strings)


def test_pth_holding_numpy_arrays(tmp_path):
    path = tmp_path / "from_pkl.pth"
    torch.save({"model": {"w": np.arange(4, dtype=np.float32), "b": np.zeros(2, np.float64)}}, path)
    out = read_state_dict(path)
    assert out["w"].tolist() == [0.0, 1.0, 2.0, 3.0] and out["b"].dtype == torch.float64


def test_pth_numpy_pickled_under_either_numpy_module_name(tmp_path):
    """A numpy-1 pickle names ``numpy.core.multiarray._reconstruct``, a numpy-2 one
    ``numpy._core.multiarray._reconstruct``: both are read, nothing else is allowed in."""
    path = tmp_path / "np.pth"
    torch.save({"model": {"w": np.arange(3, dtype=np.float32)}}, path)
    import zipfile

    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        data = {n: z.read(n) for n in names}
    pkl = next(n for n in names if n.endswith("data.pkl"))
    for spelling in (b"numpy.core.multiarray", b"numpy._core.multiarray"):
        body = data[pkl].replace(b"numpy._core.multiarray", spelling).replace(b"numpy.core.multiarray", spelling)
        out = tmp_path / f"{spelling.decode()}.pth"
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
            for n in names:
                z.writestr(n, body if n == pkl else data[n])
        assert read_state_dict(out)["w"].tolist() == [0.0, 1.0, 2.0]
