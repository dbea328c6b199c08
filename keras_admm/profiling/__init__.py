"""Profiling: is the compacted model really faster, and how close to its FLOP cut?

`profile_models` times a baseline and smaller forms of it on TensorFlow, ONNX
Runtime, Keras (any backend), LiteRT or OpenVINO, round-robin in one loop, or one
fresh session at a time in rotated blocks (`TimingProtocol(order="blocks")`);
`count_flops` and `register_flops` give the static FLOPs; `write_reports` writes
JSON, CSV, Markdown and plots. Frameworks are imported only when used: profiling
.onnx files with ONNX Runtime never imports TensorFlow.

    from keras_admm import profiling
    report = profiling.profile_models("dense.keras", ["small.keras"],
                                      engines=["tf", "onnxruntime"],
                                      batch_sizes=[1, 32])
    print(profiling.results_table(report))
    profiling.write_reports(report, "docs/perf", stem="small_vs_dense")
"""

from .engines import Engine, create_engine, engine_names, register_engine
from .environment import environment_info
from .flops import count_flops, layer_flops, register_flops
from .onnx_flops import count_onnx_flops, onnx_layer_flops
from .profiler import profile_models
from .report import (
    markdown_report,
    plot_latency,
    plot_speedup,
    results_table,
    write_csv,
    write_json,
    write_markdown,
    write_reports,
)
from .sources import ModelSource, ModelStore, open_source
from .timing import (
    TimingProtocol,
    paired_speedup,
    summarize,
    time_in_blocks,
    time_interleaved,
)

__all__ = [
    "Engine",
    "ModelSource",
    "ModelStore",
    "TimingProtocol",
    "count_flops",
    "count_onnx_flops",
    "create_engine",
    "engine_names",
    "environment_info",
    "layer_flops",
    "markdown_report",
    "onnx_layer_flops",
    "open_source",
    "paired_speedup",
    "plot_latency",
    "plot_speedup",
    "profile_models",
    "register_engine",
    "register_flops",
    "results_table",
    "summarize",
    "time_in_blocks",
    "time_interleaved",
    "write_csv",
    "write_json",
    "write_markdown",
    "write_reports",
]
