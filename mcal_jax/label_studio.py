"""People label a run's items in a live Label Studio project (``labeling.service=labelstudio:URL``).

The project (``labeling.project``, created when no project of that title exists) asks one
single-choice question, the run's classes. Each purchase of the ledger becomes tasks whose
``data`` holds the image (a ``data:`` URL of the image's bytes: the item's own file when
the pool was read from files, else a PNG of the pool's pixels), ``index`` (the pool index)
and ``request`` (the purchase, named as the file queue names it, `file_queue.request_name`).
With suggestions on, a task of B or of the residual also carries the current model's
prediction and confidence as a pre-annotation (``model_version`` = the round, or
``final``); tasks of T_plan and T_cert never do, so the test labels stay blind.

Answers are read back through Label Studio's REST API with the semantics of the file queue
(`file_queue.QueueLabeler` drives both): a purchase is recorded in the ledger the moment
every one of its tasks has an answer; until then the run stops with exit status 3, or,
with ``labeling.wait``, looks again every ``labeling.poll_seconds``. Skipped (cancelled)
annotations do not count; annotations of one task that disagree are refused, naming the
task (`answers.parse_labelstudio`). Posting is idempotent: a rerun imports only the items
of a purchase that have no task yet, so a run killed at any point and resumed asks for
nothing twice.

The token comes from the environment variable ``LABEL_STUDIO_API_KEY`` only (never the
config, the ledger or a log line): a personal access token (a JWT, exchanged for a
short-lived access token) or a legacy token.
"""

from __future__ import annotations

import base64
import io
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
from absl import logging

from mcal_jax import answers, file_queue

TOKEN_VARIABLE = "LABEL_STUDIO_API_KEY"
FROM_NAME, TO_NAME = "label", "image"  # the names of the choices and the image in the config
_PAGE = 500  # tasks a page when reading a project


class LabelStudioError(RuntimeError):
    """The server refused a request or could not be reached; the message says which."""


def label_config(classes: Sequence[str]) -> str:
    """The project's labeling interface: the image and one single choice among ``classes``."""
    choices = "".join(f"<Choice value={quoteattr(name)}/>" for name in classes)
    return (
        f'<View><Image name="{TO_NAME}" value="${TO_NAME}"/>'
        f'<Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">'
        f"{choices}</Choices></View>"
    )


def config_choices(config: str) -> list[str]:
    """The choice values of a project's label config, in order."""
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.fromstring(config)
    return [str(c.get("value")) for c in root.iter("Choice")]


def image_url(images: np.ndarray, paths: Sequence[str], folder: str, index: int) -> str:
    """A ``data:`` URL of item ``index``: its file's bytes (``paths`` are relative to
    ``folder``), or a PNG of its pixels."""
    if paths:
        path = os.path.join(folder, paths[index])
        kind = {".png": "png", ".gif": "gif", ".bmp": "bmp", ".webp": "webp"}.get(
            os.path.splitext(path)[1].lower(), "jpeg"
        )
        with open(path, "rb") as f:
            data = f.read()
    else:
        from PIL import Image

        pixels = np.asarray(images[index])
        if pixels.ndim == 3 and pixels.shape[-1] == 1:
            pixels = pixels[..., 0]
        buffer = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
        kind, data = "png", buffer.getvalue()
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


class Client:
    """Label Studio's REST API at ``url`` with a token: JSON in, JSON out."""

    def __init__(self, url: str, token: str, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._token = token
        self._header = ""

    def _authorization(self) -> str:
        if not self._header:
            if self._token.count(".") == 2:  # a personal access token: a JWT to refresh
                access = self._call("POST", "/api/token/refresh/", {"refresh": self._token}, "")
                self._header = f"Bearer {access['access']}"
            else:
                self._header = f"Token {self._token}"
        return self._header

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, path, body, self._authorization())

    def _call(self, method: str, path: str, body: Any, authorization: str) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if authorization:
            request.add_header("Authorization", authorization)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            hint = f" (check {TOKEN_VARIABLE})" if error.code in (401, 403) else ""
            raise LabelStudioError(
                f"Label Studio at {self.url}: {method} {path.split('?')[0]} answered "
                f"{error.code}{hint}: {detail}"
            ) from None
        except (urllib.error.URLError, OSError) as error:
            raise LabelStudioError(
                f"Label Studio at {self.url} cannot be reached ({error}): is it running?"
            ) from None
        return json.loads(text) if text else None


class Project:
    """The run's Label Studio project: tasks out, answers in, by request name; the
    interface of `file_queue.Queue` that `file_queue.QueueLabeler` drives. Found by its
    ``title`` (its choices must be ``classes``) or created; with no ``classes``, the
    project of that title as it is."""

    def __init__(
        self,
        client: Client,
        title: str,
        classes: Sequence[str],
        images: np.ndarray,
        paths: Sequence[str],
        folder: str = "",
        *,
        suggestions: bool = False,
        writer: bool = True,
    ):
        self.client = client
        self.title = title
        self.classes = tuple(classes)
        self.images = images
        self.paths = tuple(paths)
        self.folder = folder
        self.writer = writer
        self.suggestions = suggestions  # whether `suggest` attaches predictions
        self._predictions: dict[int, tuple[str, float, str]] = {}  # index: class, score, model
        self.id = self._find_or_create()
        self.directory = f"{client.url}/projects/{self.id}"  # where the tasks are, for messages

    def _find_or_create(self) -> int:
        found = [p for p in self._projects() if p.get("title") == self.title]
        if len(found) > 1:
            ids = ", ".join(str(p["id"]) for p in found)
            raise LabelStudioError(
                f"Label Studio at {self.client.url} has {len(found)} projects titled "
                f"{self.title!r} (ids {ids}): rename all but one, or set labeling.project"
            )
        if found:
            project = found[0]
            choices = config_choices(project.get("label_config") or "<View/>")
            if not self.classes:  # opened as it is, e.g. by the people's side
                self.classes = tuple(choices)
            elif choices != list(self.classes):
                raise LabelStudioError(
                    f"Label Studio project {project['id']} ({self.title!r}) asks for the "
                    f"classes {choices}, this run labels {list(self.classes)}: set "
                    "labeling.project to another title"
                )
            return int(project["id"])
        if not self.writer or not self.classes:  # process 0 creates it; the others find it
            raise LabelStudioError(
                f"Label Studio at {self.client.url} has no project titled {self.title!r}"
            )
        body = {"title": self.title, "label_config": label_config(self.classes)}
        project = self.client.call("POST", "/api/projects/", body)
        logging.info("created Label Studio project %d (%r)", project["id"], self.title)
        return int(project["id"])

    def _projects(self) -> list[dict[str, Any]]:
        projects, page = [], 1
        while True:
            found = self.client.call("GET", f"/api/projects/?page={page}&page_size=100")
            projects += found["results"]
            if not found.get("next"):
                return projects
            page += 1

    def tasks(self, request: str | None = None) -> list[dict[str, Any]]:
        """The project's tasks (with their annotations), or those of one request."""
        tasks: list[dict[str, Any]] = []
        page = 1
        while True:
            found = self._page(request, page, _PAGE)
            tasks += found["tasks"]
            if len(tasks) >= found["total"] or not found["tasks"]:
                return tasks
            page += 1

    def answered(self, request: str) -> int:
        """How many tasks of ``request`` have an annotation that was not skipped: counted
        by the server, so that waiting reads no task."""
        return int(self._page(request, 1, 1, answered=True)["total"])

    def _page(
        self, request: str | None, page: int, size: int, answered: bool = False
    ) -> dict[str, Any]:
        """One page of the project's tasks, those of ``request`` (and answered) only."""
        fields: dict[str, Any] = {"project": self.id, "page": page, "page_size": size}
        fields["fields"] = "all"
        items: list[dict[str, Any]] = []
        if request is not None:
            items.append({"filter": "filter:tasks:data.request", "operator": "equal",
                          "type": "String", "value": request})  # fmt: skip
        if answered:
            items.append({"filter": "filter:tasks:total_annotations", "operator": "greater",
                          "type": "Number", "value": 0})  # fmt: skip
        if items:
            fields["query"] = json.dumps({"filters": {"conjunction": "and", "items": items}})
        return dict(self.client.call("GET", "/api/tasks/?" + urllib.parse.urlencode(fields)))

    def post(self, name: str, indices: np.ndarray, paths: Sequence[str]) -> None:
        """Imports a task for each item of request ``name`` that has none yet."""
        have = {int(t["data"]["index"]) for t in self.tasks(name)}
        missing = [int(i) for i in indices if int(i) not in have]
        if not missing or not self.writer:
            return
        tasks = []
        for i in missing:
            task: dict[str, Any] = {
                "data": {
                    TO_NAME: image_url(self.images, self.paths, self.folder, i),
                    "index": i,
                    "request": name,
                }
            }
            if i in self._predictions:
                label, score, model = self._predictions[i]
                result = {"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                          "value": {"choices": [label]}}  # fmt: skip
                task["predictions"] = [{"model_version": model, "score": score, "result": [result]}]
            tasks.append(task)
        self.client.call("POST", f"/api/projects/{self.id}/import", tasks)
        logging.info("posted %d tasks of %r to Label Studio project %d", len(tasks), name, self.id)

    def suggest(
        self, indices: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, model: str
    ) -> None:
        """The model's class and confidence on ``indices``, attached to their tasks when
        they are posted, as predictions of ``model`` (the round)."""
        self._predictions = {
            int(i): (self.classes[int(p)], float(c), model)
            for i, p, c in zip(indices, predicted, confidence, strict=True)
        }

    def _answers(self, name: str) -> list[answers.Answer]:
        where = f"Label Studio project {self.id} ({self.client.url})"
        return answers.parse_labelstudio(json.dumps(self.tasks(name)), where, name)

    def wait_for(self, name: str, count: int, *, key: str, wait: bool, poll_seconds: float) -> None:
        """Returns once every task of request ``name`` has an answer; raises LabelsAwaited
        without ``wait``."""
        done = 0

        def ready() -> bool:
            nonlocal done
            done = self.answered(name)
            return done >= count

        def message() -> str:
            return (
                f"{count - done} of {count} labels awaited for purchase {key!r}: label the "
                f"tasks of request {name!r} in {self.directory}, then rerun the same command"
            )

        file_queue.await_answers(ready, message, key, count, wait, poll_seconds)

    def read(self, name: str, indices: np.ndarray) -> list[answers.Answer]:
        """The answers of request ``name`` in the order of ``indices``."""
        where = f"Label Studio project {self.id}, request {name!r}"
        return answers.check_items(self._answers(name), indices, where)


def connect(url: str) -> Client:
    """A client of the server at ``url`` with the token of ``LABEL_STUDIO_API_KEY``."""
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        raise ValueError(
            f"labeling.service=labelstudio:{url}: set the environment variable "
            f"{TOKEN_VARIABLE} to a Label Studio access token (Account & Settings)"
        )
    return Client(url, token)
