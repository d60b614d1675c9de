"""Stock-pipeline parity for question answering: predict.py's answers against transformers'
``pipeline("question-answering")`` on a run's exported ``hf_model/``.

    PYTHONPATH=src python bench/qa_pipeline_parity.py --run-dir RUN [--questions 20] [--out FILE]

transformers 5.3 removed the question-answering pipeline (huggingface/transformers#43325), so the pipeline
runs in a child process against the last 4.x release, installed once with pip into ``--side-env`` (a
folder put first on that child's PYTHONPATH; the project's own environment is not touched). Both sides
read the same questions: the first ``--questions`` rows of the run's generated test split (or
``--input``). predict.py runs with ``batch_size=1`` because a block-sparse encoder's output depends on
how far a sequence is padded and the pipeline pads each question alone; the pipeline gets the run's
``max_seq_len`` (data.max_length), ``doc_stride`` (data.chunk_stride) and ``max_answer_len``. The
tokenizer is transformers' ``BigBirdTokenizerFast`` built from the folder's ``tokenizer.json`` and the
special tokens of its ``tokenizer_config.json`` (4.x cannot read that file whole: 5.x writes
``extra_special_tokens`` as a list where 4.x expects a mapping). Writes
bench/results/qa_pipeline_parity.json: how many answers (text, start, end) agree, and each disagreement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ner_longrange import run  # the long-range benches' one way to run train.py / predict.py
from omegaconf import OmegaConf
from qa_longrange import test_split_of

ROOT = Path(__file__).resolve().parents[1]
SIDE_PACKAGES = ["transformers==4.57.6", "huggingface_hub>=0.34,<1.0", "tokenizers>=0.22,<0.23"]

# run in the child, with the side env first on sys.path: the stock pipeline over the questions
PIPELINE_CHILD = """
import json, sys, transformers
from transformers import BigBirdTokenizerFast, pipeline
model_dir, questions, out, max_seq_len, doc_stride, max_answer_len = sys.argv[1:]
saved = json.load(open(f"{model_dir}/tokenizer_config.json"))
specials = {k: saved[k] for k in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                                  "mask_token") if k in saved}
tokenizer = BigBirdTokenizerFast(tokenizer_file=f"{model_dir}/tokenizer.json",
                                 model_max_length=saved["model_max_length"], **specials)
answer = pipeline("question-answering", model=model_dir, tokenizer=tokenizer, device="cpu")
with open(out, "w") as sink:
    for line in open(questions):
        row = json.loads(line)
        found = answer(question=row["question"], context=row["context"], max_seq_len=int(max_seq_len),
                       doc_stride=int(doc_stride), max_answer_len=int(max_answer_len), top_k=1)
        sink.write(json.dumps({"id": row["id"], "answer": found["answer"], "start": found["start"],
                               "end": found["end"], "score": found["score"]}) + "\\n")
print(transformers.__version__)
"""


def ensure_side_env(folder: Path) -> None:
    if (folder / "transformers").is_dir():
        return
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(folder),
                    *SIDE_PACKAGES], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=ROOT / "logs" / "bench" / "qa_longrange" / "run-4096")
    parser.add_argument("--input", type=Path, help="SQuAD-style JSONL; default: the run's generated test split")
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--side-env", type=Path, default=ROOT / "data" / "cache" / "transformers4")
    parser.add_argument("--workdir", type=Path, default=ROOT / "logs" / "bench" / "qa_pipeline_parity")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "qa_pipeline_parity.json")
    args = parser.parse_args()
    command = " ".join(["PYTHONPATH=src python bench/qa_pipeline_parity.py", *sys.argv[1:]])
    cfg = OmegaConf.load(args.run_dir / ".hydra" / "config.yaml")
    source = args.input or test_split_of(args.run_dir)
    rows = [json.loads(line) for line in source.read_text().splitlines()][: args.questions]
    args.workdir.mkdir(parents=True, exist_ok=True)
    questions = args.workdir / "questions.jsonl"
    questions.write_text("".join(json.dumps({k: r[k] for k in ("id", "question", "context")}) + "\n" for r in rows))

    started = time.perf_counter()
    ours_file = args.workdir / "predict.jsonl"
    run("predict.py", [f"run_dir={args.run_dir}", f"input={questions}", f"output={ours_file}", "batch_size=1",
                       f"hydra.run.dir={args.workdir / 'predict'}"])
    predict_s = time.perf_counter() - started

    ensure_side_env(args.side_env)
    stock_file = args.workdir / "pipeline.jsonl"
    max_answer_len = int(cfg.data.get("max_answer_length") or 30)
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-c", PIPELINE_CHILD, str(args.run_dir / "hf_model"), str(questions), str(stock_file),
         str(cfg.data.max_length), str(cfg.data.chunk_stride), str(max_answer_len)],
        env={**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(args.side_env)},
        capture_output=True, text=True)
    if child.returncode != 0:
        sys.exit(f"the stock pipeline failed:\n{child.stderr[-3000:]}")
    pipeline_s = time.perf_counter() - started

    ours = [json.loads(line) for line in ours_file.read_text().splitlines()]
    stock = [json.loads(line) for line in stock_file.read_text().splitlines()]
    # transformers 4.x's Metaspace offsets start a word's span on the space before it: the pipeline's
    # answers carry that space, so both sides are compared with leading whitespace moved into the offset
    def trimmed(found: dict) -> tuple[str, int, int]:
        text = found["answer"].lstrip()
        return text, found["start"] + len(found["answer"]) - len(text), found["end"]

    disagreements = [{"id": o["id"], "predict": {k: o[k] for k in ("answer", "start", "end", "score")},
                      "pipeline": {k: s[k] for k in ("answer", "start", "end", "score")}}
                     for o, s in zip(ours, stock, strict=True) if trimmed(o) != trimmed(s)]
    same_raw = sum((o["answer"], o["start"], o["end"]) == (s["answer"], s["start"], s["end"])
                   for o, s in zip(ours, stock, strict=True))
    gold = [r["answers"]["text"] for r in rows]
    report = {
        "questions": len(rows), "same_answer_and_offsets": len(rows) - len(disagreements),
        "same_before_trimming_the_leading_space": same_raw,
        "disagreements": disagreements,
        "predict_exact": sum(trimmed(o)[0] in g for o, g in zip(ours, gold, strict=True)),
        "pipeline_exact": sum(trimmed(s)[0] in g for s, g in zip(stock, gold, strict=True)),
        "pipeline_transformers": child.stdout.strip().splitlines()[-1],
        "pipeline_settings": {"max_seq_len": int(cfg.data.max_length), "doc_stride": int(cfg.data.chunk_stride),
                              "max_answer_len": max_answer_len},
        "run_dir": str(args.run_dir.relative_to(ROOT) if args.run_dir.is_relative_to(ROOT) else args.run_dir),
        "predict_wall_s": round(predict_s, 1), "pipeline_wall_s": round(pipeline_s, 1), "command": command,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['same_answer_and_offsets']}/{len(rows)} answers agree; wrote {args.out}")


if __name__ == "__main__":
    main()
