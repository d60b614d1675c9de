"""``serve(cfg)``: a trained model behind HTTP, on LitServe.

LitServe owns the server: uvicorn, the request queue, batching across clients (``max_batch_size``,
``batch_timeout``), inference workers per device and ``/health`` (ready once every worker has loaded
the model). What it lacks is written here:

- ``RequestGate``, an ASGI middleware in front of LitServe's routes: every ``POST /predict`` body is
  read and checked (size, UTF-8, JSON, keys, texts, evidence) before it reaches the queue, so a bad
  request gets a 4xx with ``{"error": "one line"}`` and never enters a batch (LitServe fails a whole
  batch when one of its requests raises); errors LitServe raises itself are rewritten to the same
  shape; ``GET /`` is the page (``page.py``).
- ``ClassifierAPI``, the worker: ``predict.py``'s own ``Predictor`` (the checkpoint's input spec and
  reader, ``long_docs``, sorted batches padded to the block multiple, the task's columns) run in
  process, and ``explain`` for evidence. A batch that fails is retried one request at a time, so one
  bad document answers 500/422 alone and the others in its batch are answered.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import litserve
from omegaconf import DictConfig

from ..errors import UserError

log = logging.getLogger(__name__)

PREDICT_PATH = "/predict"
MAX_EVIDENCE = 32
REQUEST_KEYS = ("text", "texts", "id", "ids", "evidence", "question", "questions")


class BadRequest(Exception):
    """A request the server refuses: its HTTP status and one line for ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class PredictRequest:
    """One ``POST /predict`` body, checked: the texts, their ids, the number of evidence spans."""

    texts: list[str]
    ids: list[Any] | None = None
    evidence: int = 0
    single: bool = True  # {"text": ...} is answered with one object, {"texts": [...]} with a list
    questions: list[str] | None = None  # question answering: asked of the texts (the contexts)


def read_body(body: bytes, max_bytes: int) -> Any:
    """The JSON value of a request body, or ``BadRequest`` (413 too large, 400 not UTF-8 / not JSON)."""
    if len(body) > max_bytes:
        raise BadRequest(413, f"the body has {len(body):,} bytes, over the server's max_body_mb "
                              f"({max_bytes / 2**20:g} MB): send fewer or shorter texts")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadRequest(400, f"the body is not UTF-8 (byte {err.start}): encode the JSON as UTF-8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BadRequest(400, f"the body is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None


def check_request(payload: Any, default_evidence: int = 0) -> PredictRequest:
    """A decoded body -> ``PredictRequest``, or ``BadRequest`` (422) naming the key to fix."""
    if not isinstance(payload, dict):
        raise BadRequest(422, 'the body must be a JSON object with "text" (a string) or "texts" (a list of strings)')
    unknown = [key for key in payload if key not in REQUEST_KEYS]
    if unknown:
        raise BadRequest(422, f'unknown key "{unknown[0]}"; the keys are {", ".join(REQUEST_KEYS)}')
    if ("text" in payload) == ("texts" in payload):
        raise BadRequest(422, 'give either "text" (a string) or "texts" (a list of strings)')
    single = "text" in payload
    if single:
        texts, where = [payload["text"]], ['"text"']
        if "ids" in payload:
            raise BadRequest(422, '"ids" goes with "texts"; with "text" give "id"')
        ids = [payload["id"]] if "id" in payload else None
    else:
        texts = payload["texts"]
        if not isinstance(texts, list) or not texts:
            raise BadRequest(422, '"texts" must be a non-empty list of strings')
        where = [f'"texts"[{i}]' for i in range(len(texts))]
        if "id" in payload:
            raise BadRequest(422, '"id" goes with "text"; with "texts" give "ids" (one per text)')
        ids = payload.get("ids")
        if ids is not None and (not isinstance(ids, list) or len(ids) != len(texts)):
            raise BadRequest(422, f'"ids" must be a list of {len(texts)} ids, one per text')
    for name, text in zip(where, texts, strict=True):
        if not isinstance(text, str):
            raise BadRequest(422, f"{name} is {type(text).__name__ if text is not None else 'null'}, not a string")
        if not text.strip():
            raise BadRequest(422, f"{name} is empty: send the document's text")
    questions = None
    if single and "questions" in payload or not single and "question" in payload:
        raise BadRequest(422, '"question" goes with "text", "questions" (one per text) with "texts"')
    if "question" in payload or "questions" in payload:
        questions = [payload["question"]] if single else payload["questions"]
        if not isinstance(questions, list) or len(questions) != len(texts):
            raise BadRequest(422, f'"questions" must be a list of {len(texts)} strings, one per text')
        for i, question in enumerate(questions):
            name = '"question"' if single else f'"questions"[{i}]'
            if not isinstance(question, str) or not question.strip():
                raise BadRequest(422, f"{name} must be a non-empty string")
    evidence = payload.get("evidence", default_evidence)
    if isinstance(evidence, bool) or not isinstance(evidence, int) or not 0 <= evidence <= MAX_EVIDENCE:
        raise BadRequest(422, f'"evidence" is {json.dumps(evidence)}: a whole number of spans from 0 to {MAX_EVIDENCE}')
    return PredictRequest(list(texts), ids, evidence, single, questions)


# ------------------------------------------------------------------------------------------ HTTP side
async def send_json(send: Any, status: int, value: Any) -> None:
    body = json.dumps(value, ensure_ascii=False).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RequestGate:
    """ASGI middleware: the page, and every ``POST /predict`` checked before LitServe queues it.

    Pure ASGI rather than a FastAPI dependency: LitServe registers its routes itself and parses the
    body in its own handler (where invalid JSON is a 500), so the body is checked here and replayed.
    """

    def __init__(self, app: Any, *, max_bytes: int, default_evidence: int = 0, evidence_refusal: str | None = None,
                 page: str = "") -> None:
        self.app, self.max_bytes, self.default_evidence = app, max_bytes, default_evidence
        self.evidence_refusal, self.page = evidence_refusal, page.encode("utf-8")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["path"] == "/" and scope["method"] in ("GET", "HEAD"):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/html; charset=utf-8"),
                                    (b"content-length", str(len(self.page)).encode())]})
            await send({"type": "http.response.body", "body": self.page if scope["method"] == "GET" else b""})
        elif scope["path"] == PREDICT_PATH and scope["method"] == "POST":
            await self.predict(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def read(self, scope: dict[str, Any], receive: Any) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest(400, "the client closed the connection before the body ended")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= self.max_bytes:
                chunks.append(chunk)
            if not message.get("more_body"):
                break
        # an oversized body is read to its end but not kept: a client still sending would see a broken
        # pipe instead of its 413
        if size > self.max_bytes:
            raise BadRequest(413, f"the body has {size:,} bytes, over the server's max_body_mb "
                                  f"({self.max_bytes / 2**20:g} MB): send fewer or shorter texts")
        return b"".join(chunks)

    async def predict(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body = await self.read(scope, receive)
            request = check_request(read_body(body, self.max_bytes), self.default_evidence)
            if request.evidence and self.evidence_refusal:
                raise BadRequest(422, self.evidence_refusal)
        except BadRequest as err:
            await send_json(send, err.status, {"error": err.message})
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        start: dict[str, Any] = {}
        parts: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))

        # the body was read as JSON whatever its Content-Type (curl -d says form-urlencoded): LitServe is told so
        headers = [(k, v) for k, v in scope.get("headers") or [] if k not in (b"content-type", b"content-length")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await self.app({**scope, "headers": headers}, replay, capture)
        status, answer = int(start.get("status", 500)), b"".join(parts)
        try:
            value = json.loads(answer)
        except ValueError:
            value = None
        if status >= 400:  # LitServe's own errors ({"detail": ...}: timeouts, its 500s)
            detail = value.get("detail") if isinstance(value, dict) else None
            await send_json(send, status, {"error": str(detail or answer.decode("utf-8", "replace") or "error")})
        elif isinstance(value, dict) and "error" in value:  # a request the worker could not answer
            await send_json(send, int(value.get("status", 500)), {"error": str(value["error"])})
        else:
            await send({**start, "headers": [(k, v) for k, v in start.get("headers", [])]})
            await send({"type": "http.response.body", "body": answer})


# ---------------------------------------------------------------------------------------- worker side
@dataclass
class ServeSettings:
    """What the worker needs to rebuild predict's Predictor in its own process (picklable)."""

    checkpoint: str
    max_length: int | None = None
    batch_size: int | None = None
    long_docs: str = "truncate"
    chunk_stride: int | None = None
    chunk_aggregation: str = "mean"
    evidence_window: int = 16
    evidence_method: str = "auto"
    threads: int | None = None  # torch CPU threads per worker; None: torch's default
    extra: dict[str, Any] = field(default_factory=dict)


def serves_on_cpu(accelerator: str) -> bool:
    """``accelerator=cpu``, or ``auto`` on a machine without CUDA."""
    import torch

    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def worker_threads(on_cpu: bool, workers: int, cores: int | None = None,
                   environ: dict[str, str] | None = None) -> int | None:
    """Each CPU worker's share of the cores. LitServe starts ``workers`` processes, each with torch's
    default pool of one thread per core, so N workers would put N x cores threads on the cores and
    fight over them; an even share keeps them apart. None (torch's default): one worker, a GPU, or
    ``OMP_NUM_THREADS`` set by the user, which wins."""
    environ = os.environ if environ is None else environ
    if not on_cpu or workers <= 1 or environ.get("OMP_NUM_THREADS"):
        return None
    return max(1, (cores or os.cpu_count() or 1) // workers)


def build_predictor(module: Any, settings: ServeSettings) -> Any:
    """predict.py's Predictor over the request texts (one text column), run in process."""
    from .predict import Predictor

    inputs = module.inputs.replace(max_length=settings.max_length, stride=settings.chunk_stride,
                                   text_columns="text", eval_batch_size=settings.batch_size,
                                   question_column="question", context_column="text")
    return Predictor(module, inputs, settings.long_docs, settings.chunk_aggregation, in_process=True)


def evidence_refusal(module: Any, method: str, accelerator: str) -> str | None:
    """Why this model cannot give evidence here (one line), or None."""
    from .evidence import resolve_method

    if module.task.per_token:
        what = "answers questions" if module.task.pair_input else "tags words"
        return f"evidence explains document labels; this model {what}: drop \"evidence\""
    method = resolve_method(module, method)
    if method == "gradient" and serves_on_cpu(accelerator) and not module.backend.supports_cpu_training:
        return (f"evidence needs a backward pass, which attention={module.backend.name} lacks on CPU: "
                "serve on a GPU (accelerator=gpu) or drop \"evidence\"")
    return None


class ClassifierAPI(litserve.LitAPI):
    """The inference worker: requests in, per document what predict.py writes for it out."""

    def __init__(self, settings: ServeSettings, max_batch_size: int = 8, batch_timeout: float = 0.01) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=PREDICT_PATH)
        self.settings = settings

    def setup(self, device: str) -> None:
        from ..models.factory import load_classifier
        from .evidence import resolve_method

        if self.settings.threads:
            import torch

            torch.set_num_threads(self.settings.threads)
        module = load_classifier(Path(self.settings.checkpoint))
        module.to(device)
        self.module = module
        self.predictor = build_predictor(module, self.settings)
        self.method = None if module.task.per_token else resolve_method(module, self.settings.evidence_method)

    # decode_request's ``request`` and encode_response's return stay unannotated: LitServe reads
    # these annotations as the endpoint's FastAPI types (unannotated: the raw Request and Response)
    def decode_request(self, request, **kwargs: Any) -> PredictRequest:  # noqa: ANN001
        return request if isinstance(request, PredictRequest) else check_request(request)

    def batch(self, inputs: list[PredictRequest]) -> list[PredictRequest]:
        return list(inputs)

    def unbatch(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return output

    def predict(self, requests: Any, **kwargs: Any) -> Any:
        if isinstance(requests, PredictRequest):  # max_batch_size=1: LitServe hands one request
            return self.answer_each([requests])[0]
        return self.answer_each(requests)

    def encode_response(self, output: dict[str, Any], **kwargs: Any):  # noqa: ANN201
        return output

    def answer_each(self, requests: list[PredictRequest]) -> list[dict[str, Any]]:
        """The batch at once; if it fails, each request alone, so that one failure stays its own."""
        try:
            return self.answer(requests)
        except Exception:  # noqa: BLE001 - a failed batch is retried per request below
            return [self.answer_alone(request) for request in requests]

    def answer_alone(self, request: PredictRequest) -> dict[str, Any]:
        """One request; its error as the answer (422 for a UserError, else 500, logged)."""
        try:
            return self.answer([request])[0]
        except UserError as err:
            return {"error": str(err), "status": 422}
        except Exception as err:  # noqa: BLE001 - logged with its traceback, answered in one line
            log.exception("request failed")
            first = str(err).splitlines()[0] if str(err) else ""
            return {"error": f"internal error ({type(err).__name__}: {first})", "status": 500}

    def answer(self, requests: list[PredictRequest]) -> list[dict[str, Any]]:
        """Every text of every request through predict's Predictor in one call, then split per request."""
        import pandas as pd

        from .evidence import explain
        from .predict import document_records

        texts = [text for request in requests for text in request.texts]
        owner = [r for r, request in enumerate(requests) for _ in request.texts]
        asks = self.module.task.pair_input
        if any((request.questions is not None) != asks for request in requests):
            raise UserError('this model answers questions: send "question" with "text" ("questions" with "texts")'
                            if asks else '"question" is for question answering models; this one does not answer questions')
        frame = {"text": texts}
        if asks:
            frame["question"] = [q for request in requests for q in request.questions or []]
        result = self.predictor.predict(pd.DataFrame(frame), "the request")
        if result is None:
            raise RuntimeError("the predictor returned nothing")
        records = document_records(result[1])
        for k in sorted({request.evidence for request in requests if request.evidence}):
            chosen = [i for i, r in enumerate(owner) if requests[r].evidence == k]
            spans = explain(self.module, [texts[i] for i in chosen], k, self.settings.evidence_window,
                            self.predictor.inputs, self.predictor.long_docs, self.predictor.aggregation, self.method)
            for i, doc_spans in zip(chosen, spans, strict=True):
                records[i]["evidence"] = doc_spans
        answers: list[dict[str, Any]] = []
        cursor = 0
        for request in requests:
            mine = records[cursor : cursor + len(request.texts)]
            cursor += len(request.texts)
            if request.ids is not None:
                mine = [{"id": doc_id, **record} for doc_id, record in zip(request.ids, mine, strict=True)]
            answers.append(mine[0] if request.single else {"predictions": mine})
        return answers


# ---------------------------------------------------------------------------------------------- entry
def check_options(cfg: DictConfig) -> None:
    """Bad server keys end before any model is loaded (one line each)."""
    def whole(key: str, low: int, high: int | None = None) -> int:
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            allowed = f"from {low} to {high}" if high is not None else f"of {low} or more"
            raise UserError(f"{key}={value} is not a whole number {allowed}: fix {key}")
        return value

    if cfg.get("host") not in ("127.0.0.1", "0.0.0.0", "::"):
        raise UserError(f"host={cfg.get('host')} is not one LitServe binds: use 127.0.0.1 (this machine only), "
                        "0.0.0.0 or :: (every interface): fix host")
    whole("port", 1024, 65535)
    whole("max_batch_size", 1)
    whole("workers", 1)
    whole("evidence", 0, MAX_EVIDENCE)
    for key in ("batch_timeout", "request_timeout", "max_body_mb"):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (key != "batch_timeout" and value == 0):
            raise UserError(f"{key}={value} is not a positive number of {'MB' if key == 'max_body_mb' else 'seconds'}: fix {key}")
    if cfg.get("accelerator") not in ("auto", "cpu", "gpu", "cuda", "mps"):
        raise UserError(f"accelerator={cfg.get('accelerator')} is not one of auto, cpu, gpu, mps: fix accelerator")


def serve(cfg: DictConfig) -> None:
    """Check the keys and the checkpoint here (one line each), then hand the server to LitServe."""
    from ..models.checkpoints import find_checkpoint
    from ..models.factory import load_classifier
    from .evidence import check_evidence_options
    from .page import render_page
    from .predict import Predictor

    check_options(cfg)
    check_evidence_options(1, None, cfg.get("evidence_window", 16), cfg.get("evidence_method", "auto"))
    checkpoint = find_checkpoint(cfg.get("run_dir"), cfg.get("ckpt_path"))
    accelerator = {"gpu": "cuda"}.get(cfg.accelerator, cfg.accelerator)
    settings = ServeSettings(str(checkpoint), cfg.get("max_length"), cfg.get("batch_size"), cfg.long_docs,
                             cfg.get("chunk_stride"), cfg.chunk_aggregation, cfg.evidence_window, cfg.evidence_method,
                             worker_threads(serves_on_cpu(accelerator), int(cfg.workers)))
    # the checkpoint loaded once here: a bad one, a reader/long_docs clash or a model without evidence
    # ends with one line before any worker starts; the workers load their own copy
    module = load_classifier(checkpoint)
    predictor = build_predictor(module, settings)
    assert isinstance(predictor, Predictor)
    refusal = evidence_refusal(module, cfg.evidence_method, str(cfg.accelerator))
    if cfg.evidence and refusal:
        raise UserError(f"{refusal.replace(chr(34) + 'evidence' + chr(34), 'evidence')} (the evidence key)")
    labels = [module.id2label[i] for i in sorted(module.id2label)] if module.id2label else []
    page = render_page(module.task.name, labels, int(cfg.evidence) if not refusal else 0, refusal is None)
    del module, predictor
    gc.collect()

    api = ClassifierAPI(settings, int(cfg.max_batch_size), float(cfg.batch_timeout))
    gate = (RequestGate, {"max_bytes": int(float(cfg.max_body_mb) * 2**20), "default_evidence": int(cfg.evidence),
                          "evidence_refusal": refusal, "page": page})
    server = litserve.LitServer(api, accelerator=accelerator, devices=cfg.devices, workers_per_device=int(cfg.workers),
                                timeout=float(cfg.request_timeout), middlewares=[gate], disable_openapi_url=True)
    print(f"Checkpoint: {checkpoint}")
    print(f"Serving on http://{cfg.host}:{cfg.port}/ (POST {PREDICT_PATH}, GET /health); Ctrl-C stops it", flush=True)
    server.run(host=cfg.host, port=int(cfg.port), generate_client_file=False, log_level=str(cfg.log_level))
