"""Small text helpers shared by the reports (sparsity report, compaction summary).

>>> human(1_234_567), factor(6.2104)
('1.23M', '6.21x')
>>> print(text_table(("layer", "FLOPs"), [("conv1", "576K")], numeric=(1,)))
layer  FLOPs
------------
conv1   576K
"""

from __future__ import annotations

import json

__all__ = ["human", "factor", "text_table", "dump_json"]


def human(n) -> str:
    """1234567 -> "1.23M"; None -> "-"."""
    if n is None:
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(int(n))


def factor(x) -> str:
    """6.2104 -> "6.21x"; None -> "-"."""
    return "-" if x is None else f"{x:.2f}x"


def text_table(headers, rows, numeric=()) -> str:
    """Aligned columns with a rule under the header (and none after the rows)."""
    table = [tuple(map(str, headers)), *(tuple(map(str, r)) for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]

    def line(cells):
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join(
        [line(table[0]), "-" * len(line(table[0])), *(line(r) for r in table[1:])]
    )


def dump_json(data, path=None, indent=2) -> str:
    """`data` as JSON text; also written to `path` (with a final newline) if given."""
    text = json.dumps(data, indent=indent)
    if path is not None:
        with open(path, "w") as f:
            f.write(text + "\n")
    return text
