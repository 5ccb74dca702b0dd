"""What one stored version costs, exactly, from tensor shapes alone (no tensors, no torch).

A version is one safetensors file (vopstore.checkpoint): 8 bytes of header length, a JSON
header, the tensor data. safetensors writes the header as compact JSON with
``__metadata__`` first and the tensors sorted by dtype alignment then name, each as
``{"dtype":..,"shape":[..],"data_offsets":[begin,end]}``, padded with spaces to a multiple
of 8. Reproducing that gives the file size of a full fine-tune of ViT-B/32 without
allocating its 605 MB; a test checks it against files that were really written.
"""

from __future__ import annotations

import json
from typing import Mapping

from vopstore.checkpoint import METADATA_KEY, PromptSetMeta

_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
_SAFETENSORS_DTYPE = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def checkpoint_size(shapes: Mapping[str, tuple[int, ...]], meta: PromptSetMeta, dtype: str = "float32") -> int:
    """Bytes of the checkpoint file holding tensors of ``shapes`` (all of ``dtype``) with ``meta``."""
    code = _SAFETENSORS_DTYPE[dtype]
    entries, offset = [], 0
    for name in sorted(shapes):  # one dtype: safetensors orders by name
        numel = 1
        for dim in shapes[name]:
            numel *= dim
        end = offset + numel * _BYTES[code]
        entries.append(f'{_json(name)}:{{"dtype":"{code}","shape":{_json(list(shapes[name]))},'
                       f'"data_offsets":[{offset},{end}]}}')
        offset = end
    header = "{" + ",".join([f'"__metadata__":{_json({METADATA_KEY: meta.to_json()})}', *entries]) + "}"
    length = len(header.encode("utf-8"))
    return 8 + length + (-length) % 8 + offset
