"""``python -m bigbird_ft.export run_dir=DIR|ckpt_path=PATH out=DIR [onnx_length=N]`` (the logic: inference/export.py)."""

from .inference.export import main

if __name__ == "__main__":
    main()
