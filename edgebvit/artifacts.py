"""File names of the artifacts that pass between stages: the run directory training writes and
export reads, and what export writes beside the flatbuffer (docs/architecture.md, Run directory).

One place for the names, so the writer (edgebvit.training) and the reader (edgebvit.converters)
cannot drift apart without either importing the other.
"""
CONFIG_FILE = "config.json"  # the resolved RunConfig
MODEL_FILE = "model.keras"  # the final (last-epoch) student
BEST_MODEL_FILE = "best.keras"  # the student at its best epoch
BEST_STATE_FILE = "best.json"  # which epoch that was, and its metric
SUMMARY_FILE = "summary.json"  # written last: its presence marks a finished run
PARITY_FILE = "parity_images.npz"  # held-out test images, model-ready, for the parity gate
CALIBRATION_FILE = "calibration_images.npz"  # training images, model-ready, for int8 ranges
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
TFLITE_FILE = "model.tflite"  # export's default output inside a run directory


def export_report_name(tflite_stem: str) -> str:
    """The JSON report written beside a flatbuffer: model.tflite -> model.export.json."""
    return f"{tflite_stem}.export.json"
