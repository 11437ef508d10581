"""A minimal writer of Torch7's binary serialisation (``torch.save`` of Torch7, ``File.lua:
writeObject``), and builders of the official DeepMask / SharpMask module trees, for the tests.

Format (native byte order, ``int`` 4 bytes, ``long`` 8 bytes as on 64-bit Linux): every
object starts with an int type (0 nil, 1 number, 2 string, 3 table, 4 torch class, 5 boolean,
6 function: reference index, int length + Lua bytecode, upvalues).
number: a double; string: int length + bytes; boolean: int 0/1; table and torch class: an int
reference index (an object written before is written as its index only), then for a table an
int entry count and key/value objects, for a torch class the strings ``"V <version>"`` and the
class name followed by the class's own payload: a tensor writes int ndim, long[ndim] sizes,
long[ndim] strides, long (storage offset + 1) and its storage object; a storage writes long
size + raw values; any other class (nn modules) writes its field table as an object.

Module trees follow ``DeepMask.lua`` / ``SharpMask.lua`` / fb.resnet.torch's ResNet as they are
saved (BatchNorm folded into ``inn.ConstAffine`` by ``BNtoFixed``, 3x3/7x7 convs wrapped in
``Sequential(SpatialSymmetricPadding, conv)`` by ``modelUtils.updatePadding``), with sizes as
parameters so tests can write small models of the same structure. Written for the tests from
the Torch7 format description; no Torch7 code is used.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

_NIL, _NUMBER, _STRING, _TABLE, _TORCH, _BOOLEAN, _FUNCTION = 0, 1, 2, 3, 4, 5, 6
_STORAGE = {
    "torch.FloatTensor": "torch.FloatStorage",
    "torch.CudaTensor": "torch.CudaStorage",
    "torch.DoubleTensor": "torch.DoubleStorage",
    "torch.LongTensor": "torch.LongStorage",
}
_DTYPE = {
    "torch.FloatTensor": np.float32,
    "torch.CudaTensor": np.float32,
    "torch.DoubleTensor": np.float64,
    "torch.LongTensor": np.int64,
}


@dataclass(eq=False)
class T7Class:
    """An instance of a Torch class written through its field table (nn modules)."""

    typename: str
    fields: dict = field(default_factory=dict)
    version: int = 1


@dataclass(eq=False)
class LuaFunction:
    """A serialised Lua function: ``string.dump`` bytecode and its upvalues table."""

    bytecode: bytes
    upvalues: dict = field(default_factory=dict)


@dataclass(eq=False)
class T7Tensor:
    """A tensor (contiguous, storage offset 0 unless ``offset``) of a Torch tensor class."""

    array: np.ndarray
    typename: str = "torch.CudaTensor"  # what a model saved from the GPU holds
    offset: int = 0
    strides: tuple[int, ...] | None = None  # element strides to write instead of the real ones (corrupt files)


class T7Writer:
    def __init__(self, f) -> None:
        self.f = f
        self.index: dict[int, int] = {}  # id(object) -> reference index
        self.keep: list = []  # keeps written objects alive so ids stay unique

    def _int(self, v: int) -> None:
        self.f.write(struct.pack("=i", v))

    def _long(self, *v: int) -> None:
        self.f.write(struct.pack(f"={len(v)}q", *v))

    def _str(self, s: str | bytes) -> None:
        b = s.encode() if isinstance(s, str) else s
        self._int(len(b))
        self.f.write(b)

    def _ref(self, obj) -> bool:
        """Write the reference index; True when the object was written before."""
        if id(obj) in self.index:
            self._int(self.index[id(obj)])
            return True
        self.index[id(obj)] = len(self.index) + 1
        self.keep.append(obj)
        self._int(self.index[id(obj)])
        return False

    def write(self, obj) -> None:
        if obj is None:
            self._int(_NIL)
        elif isinstance(obj, bool):
            self._int(_BOOLEAN)
            self._int(int(obj))
        elif isinstance(obj, (int, float)):
            self._int(_NUMBER)
            self.f.write(struct.pack("=d", float(obj)))
        elif isinstance(obj, (str, bytes)):
            self._int(_STRING)
            self._str(obj)
        elif isinstance(obj, (dict, list)):
            self._int(_TABLE)
            if not self._ref(obj):
                items = list(obj.items()) if isinstance(obj, dict) else list(enumerate(obj, 1))
                self._int(len(items))
                for k, v in items:
                    self.write(k)
                    self.write(v)
        elif isinstance(obj, (T7Class, T7Tensor)):
            self._int(_TORCH)
            if not self._ref(obj):
                self._str(f"V {obj.version if isinstance(obj, T7Class) else 1}")
                self._str(obj.typename)
                if isinstance(obj, T7Class):
                    self.write(obj.fields)
                else:
                    self._tensor(obj)
        elif isinstance(obj, LuaFunction):  # type 6: index, int size + bytecode, upvalues
            self._int(_FUNCTION)
            if not self._ref(obj):
                self._str(obj.bytecode)
                self.write(obj.upvalues)
        else:
            raise TypeError(f"cannot write {type(obj).__name__} to a Torch7 file")

    def _tensor(self, t: T7Tensor) -> None:
        a = np.ascontiguousarray(t.array, dtype=_DTYPE[t.typename])
        self._int(a.ndim)
        self._long(*a.shape)
        self._long(*(t.strides or [s // a.itemsize for s in a.strides]))
        self._long(t.offset + 1)  # Lua's 1-based storage offset
        storage = np.concatenate([np.zeros(t.offset, a.dtype), a.ravel()])
        self._int(_TORCH)
        self._int(len(self.index) + 1)  # a storage is an object of its own
        self.index[id(storage)] = len(self.index) + 1
        self.keep.append(storage)
        self._str("V 1")
        self._str(_STORAGE[t.typename])
        self._long(storage.size)
        self.f.write(storage.tobytes())


def write_t7(path, obj) -> None:
    """``torch.save(path, obj)`` of Torch7, binary mode."""
    with open(path, "wb") as f:
        T7Writer(f).write(obj)


# --------------------------------------------------------------------------- nn modules


def module(typename: str, **fields) -> T7Class:
    return T7Class(typename, {"train": False, "_type": "torch.CudaTensor", **fields})


def seq(*mods, typename: str = "nn.Sequential") -> T7Class:
    return module(typename, modules=list(mods))


def tensor(rng: np.random.Generator, *shape: int, scale: float = 1.0, typename: str = "torch.CudaTensor") -> T7Tensor:
    return T7Tensor((rng.standard_normal(shape) * scale).astype(np.float32), typename)


def conv(
    rng,
    nin: int,
    nout: int,
    k: int,
    stride: int = 1,
    pad: int = 0,
    bias: bool = False,
    typename: str = "cudnn.SpatialConvolution",
) -> T7Class:
    """A conv as fb.resnet.torch / DeepMask.lua build it (weight [nout, nin, k, k])."""
    fields = dict(
        nInputPlane=nin,
        nOutputPlane=nout,
        kW=k,
        kH=k,
        dW=stride,
        dH=stride,
        padW=pad,
        padH=pad,
        groups=1,
        weight=tensor(rng, nout, nin, k, k, scale=(2.0 / (nin * k * k)) ** 0.5),
    )
    if bias:
        fields["bias"] = tensor(rng, nout, scale=0.1)
    return module(typename, **fields)


def sym_padded(c: T7Class) -> T7Class:
    """``modelUtils.updatePadding``: the conv's padding moves into a SpatialSymmetricPadding."""
    p = c.fields["padW"]
    c.fields["padW"] = c.fields["padH"] = 0
    return seq(module("nn.SpatialSymmetricPadding", pad_l=p, pad_r=p, pad_t=p, pad_b=p), c)


def affine(rng, n: int) -> T7Class:
    """A BatchNorm after ``BNtoFixed``: ``inn.ConstAffine`` with ``y = a * x + b``."""
    a = T7Tensor(rng.uniform(0.5, 1.5, n).astype(np.float32))
    return module("inn.ConstAffine", a=a, b=tensor(rng, n, scale=0.1), inplace=False)


def linear(rng, nin: int, nout: int) -> T7Class:
    return module("nn.Linear", weight=tensor(rng, nout, nin, scale=nin**-0.5), bias=tensor(rng, nout, scale=0.1))


def relu() -> T7Class:
    return module("cudnn.ReLU", inplace=True)


def zero_pad(p: int) -> T7Class:
    return module("nn.SpatialZeroPadding", pad_l=p, pad_r=p, pad_t=p, pad_b=p)


# --------------------------------------------------------------------------- official trees


def bottleneck(rng, nin: int, n: int, stride: int, bias: bool = False) -> T7Class:
    """fb.resnet.torch's bottleneck (stride on the 3x3 conv), shortcut type B. Its convs have
    no bias with cuDNN >= 4, zero biases before (``bias``: random ones, to test folding)."""
    s = seq(
        conv(rng, nin, n, 1, bias=bias),
        affine(rng, n),
        relu(),
        sym_padded(conv(rng, n, n, 3, stride, 1, bias=bias)),
        affine(rng, n),
        relu(),
        conv(rng, n, n * 4, 1, bias=bias),
        affine(rng, n * 4),
    )
    short = (
        seq(conv(rng, nin, n * 4, 1, stride, bias=bias), affine(rng, n * 4))
        if nin != n * 4 or stride != 1
        else module("nn.Identity")
    )
    return seq(seq(s, short, typename="nn.ConcatTable"), module("nn.CAddTable", inplace=True), relu())


def deepmask_trunk(
    rng, width: int, fsz: int, reduce: int, hidden: int, blocks=(3, 4, 6), bias: bool = False
) -> T7Class:
    """ResNet-50 minus its last four modules, + crop, 1x1 conv, ReLU, View, Linear (DeepMask.lua)."""
    mods = [
        sym_padded(conv(rng, 3, width, 7, 2, 3)),
        affine(rng, width),
        relu(),
        module("cudnn.SpatialMaxPooling", kW=3, kH=3, dW=2, dH=2, padW=1, padH=1, ceil_mode=False),
    ]
    nin = width
    for i, nb in enumerate(blocks):
        n = width * 2**i
        mods.append(
            seq(*[bottleneck(rng, nin if b == 0 else n * 4, n, 2 if (i and b == 0) else 1, bias) for b in range(nb)])
        )
        nin = n * 4
    mods += [
        zero_pad(-1),
        conv(rng, nin, reduce, 1, bias=True),
        relu(),
        module("nn.View", size=[reduce * fsz * fsz], numElements=reduce * fsz * fsz),
        linear(rng, reduce * fsz * fsz, hidden),
    ]
    return seq(*mods)


def deepmask_heads(rng, hidden: int, osz: int, gsz: int, score_hidden: int) -> tuple[T7Class, T7Class]:
    """``maskBranch`` (Linear + the 56 -> 112 bilinear upsampling) and ``scoreBranch``."""
    up = seq(
        module("nn.Copy"),
        module("nn.View", size=[osz, osz]),
        module("nn.SpatialReSamplingEx", owidth=gsz, oheight=gsz, mode="bilinear"),
        module("nn.View", size=[gsz * gsz]),
        module("nn.Copy"),
    )
    mask = seq(seq(linear(rng, hidden, osz * osz)), up)
    score = seq(
        module("nn.Dropout", p=0.5, v2=True),
        linear(rng, hidden, score_hidden),
        module("nn.Threshold", threshold=0, val=1e-6),
        module("nn.Dropout", p=0.5, v2=True),
        linear(rng, score_hidden, 1),
    )
    return mask, score


def deepmask_file(rng, width=8, fsz=2, reduce=16, hidden=32, osz=8, gsz=16, score_hidden=16, bias=False) -> dict:
    """``{model = nn.DeepMask, config = ...}`` as ``TrainerDeepMask.lua`` saves it (the
    released model: width 64, fsz 10, reduce 128, hidden 512, osz 56, gsz 112, score 1024)."""
    trunk = deepmask_trunk(rng, width, fsz, reduce, hidden, bias=bias)
    mask, score = deepmask_heads(rng, hidden, osz, gsz, score_hidden)
    model = T7Class("nn.DeepMask", {"trunk": trunk, "maskBranch": mask, "scoreBranch": score, "fSz": fsz})
    return {"model": model, "config": {"iSz": 16 * fsz, "oSz": osz, "gSz": gsz, "batch": 32, "lr": 1e-5}}


def sharpmask_file(
    rng, width=8, fsz=2, reduce=16, hidden=32, osz=8, score_hidden=16, km=16, skip=(16, 16, 16, 8)
) -> dict:
    """``{model = nn.SharpMask, config = ...}`` as ``TrainerSharpMask.lua`` saves it (the
    released model: the DeepMask sizes, km = ks = 32, skip (64, 64, 64, 32))."""
    trunk = deepmask_trunk(rng, width, fsz, reduce, hidden)
    mask, score = deepmask_heads(rng, hidden, osz, 2 * osz, score_hidden)
    feats = [width * 16, width * 8, width * 4, width]  # trunk.modules[8], [6], [5], [3]: strides 16, 8, 4, 2
    neths, netvs = [], {0: seq(linear(rng, hidden, fsz * fsz * km), module("nn.View", size=[km, fsz, fsz]))}
    for i in range(1, 5):
        n, crop = km >> (i - 1), [0, -2, -4, -8][i - 1]
        h = [zero_pad(crop)] if crop else []
        h += [
            sym_padded(conv(rng, feats[i - 1], skip[i - 1], 3, 1, 1, bias=True)),
            relu(),
            sym_padded(conv(rng, skip[i - 1], n, 3, 1, 1, bias=True)),
            relu(),
            sym_padded(conv(rng, n, n // 2, 3, 1, 1, bias=True)),
        ]
        neths.append(seq(*h))
        netvs[i] = seq(
            sym_padded(conv(rng, n, n, 3, 1, 1, bias=True)),
            relu(),
            sym_padded(conv(rng, n, n // 2, 3, 1, 1, bias=True)),
        )
    refs = {0: netvs[0]}
    for i in range(1, 5):
        refs[i] = seq(
            seq(neths[i - 1], netvs[i], typename="nn.ParallelTable"),
            module("nn.CAddTable"),
            relu(),
            module("nn.SpatialUpSamplingNearest", scale_factor=2),
        )
    refs[4].fields["modules"] += [
        sym_padded(conv(rng, km >> 4, 1, 3, 1, 1, bias=True)),
        module("nn.View", size=[(16 * fsz) ** 2]),
    ]
    model = T7Class(
        "nn.SharpMask",
        {
            "km": km,
            "ks": km,
            "skpos": [8, 6, 5, 3],
            "inps": {},
            "trunk": trunk,
            "scoreBranch": score,
            "maskBranchDM": mask,
            "fSz": fsz,
            "neths": neths,
            "netvs": netvs,
            "refs": refs,
        },
    )
    return {"model": model, "config": {"iSz": 16 * fsz, "gSz": 16 * fsz, "km": km, "ks": km, "batch": 32}}
