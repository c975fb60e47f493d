"""A small Hugging Face Hub-compatible HTTP server for tests, on 127.0.0.1.

Serves the endpoints huggingface_hub calls to read a model repo: repo info at a
revision (`/api/models/{repo}[/revision/{rev}]`), refs (`/api/models/{repo}/refs`),
commit history (`/api/models/{repo}/commits/{rev}`) and file resolve
(`HEAD`/`GET /{repo}/resolve/{rev}/{path}`), and the write side the release
mirror uses: repo create, YAML validation of model cards, preupload (always "regular": bytes come inline),
commit (NDJSON; a stale `parentCommit` gets 412), tag, branch create/delete. Repos live in
memory as commits of whole file trees; `commit` adds one to a branch, `tag`
points a tag at a branch's head. Later tests extend it with the write side.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> path -> bytes
    parents: dict[str, str | None] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        if revision in self.commits:
            return revision
        return self.branches.get(revision) or self.tags.get(revision)


class HubServer:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def commit(
        self,
        repo_id: str,
        files: dict[str, bytes],
        branch: str = "main",
        delete: tuple[str, ...] = (),
        message: str = "Upload files",
    ) -> str:
        """Add files to (and delete from) the head of `branch`; return the new commit sha."""
        with self.lock:
            repo = self.repos.setdefault(repo_id, Repo())
            parent = repo.branches.get(branch)
            tree = dict(repo.commits.get(parent or "", {}))
            tree.update(files)
            for path in delete:
                tree.pop(path, None)
            sha = hashlib.sha1(repr((parent, message, sorted(tree.items()))).encode()).hexdigest()
            repo.commits[sha], repo.parents[sha], repo.titles[sha] = tree, parent, message
            repo.branches[branch] = sha
            return sha

    def tag(self, repo_id: str, tag: str, revision: str = "main") -> None:
        with self.lock:
            repo = self.repos[repo_id]
            sha = repo.resolve(revision)
            assert sha is not None, revision
            repo.tags[tag] = sha


def _handler(server: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, head: bool = False) -> None:
            self.send_response(status)
            for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
                self.send_header(key, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, status: int, data: object) -> None:
            self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

        def _not_found(self, what: str, head: bool = False) -> None:
            self._send(404, json.dumps({"error": what}).encode(), {"X-Error-Code": "RepoNotFound"}, head)

        def do_POST(self) -> None:
            parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with server.lock:
                if parts[:3] == ["api", "repos", "create"]:
                    self._create(json.loads(body))
                elif parts[:2] == ["api", "validate-yaml"]:
                    self._json(200, {"warnings": []})
                elif (
                    parts[:2] == ["api", "models"]
                    and len(parts) >= 6
                    and parts[4] in ("preupload", "commit", "tag", "branch")
                ):
                    repo = server.repos.get("/".join(parts[2:4]))
                    if repo is None:
                        return self._not_found("repo")
                    action = getattr(self, f"_{parts[4]}")
                    action("/".join(parts[2:4]), repo, "/".join(parts[5:]), body)
                else:
                    self._not_found(self.path)

        def do_DELETE(self) -> None:
            parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
            with server.lock:
                repo = server.repos.get("/".join(parts[2:4]))
                if repo is None or parts[4] != "branch" or "/".join(parts[5:]) not in repo.branches:
                    return self._not_found(self.path)
                del repo.branches["/".join(parts[5:])]
                self._json(200, {})

        def _create(self, request: dict[str, object]) -> None:
            repo_id = f"{request.get('organization') or 'user'}/{request['name']}"
            if repo_id in server.repos:
                return self._json(
                    409, {"error": "You already created this model repo", "url": f"{server.url}/{repo_id}"}
                )
            server.repos[repo_id] = Repo()
            # Like the Hub, a new repo starts with one commit on main.
            sha = hashlib.sha1(repo_id.encode()).hexdigest()
            repo = server.repos[repo_id]
            repo.commits[sha], repo.parents[sha], repo.titles[sha] = {".gitattributes": b""}, None, "initial commit"
            repo.branches["main"] = sha
            self._json(200, {"url": f"{server.url}/{repo_id}"})

        def _preupload(self, repo_id: str, repo: Repo, revision: str, body: bytes) -> None:
            files = json.loads(body)["files"]
            self._json(
                200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )

        def _commit(self, repo_id: str, repo: Repo, branch: str, body: bytes) -> None:
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            header = lines[0]["value"]
            head = repo.branches.get(branch)
            if header.get("parentCommit") not in (None, head):
                return self._json(412, {"error": "A commit has happened since. Please refresh and try again."})
            tree = dict(repo.commits.get(head or "", {}))
            for line in lines[1:]:
                if line["key"] == "file":
                    tree[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
                elif line["key"] == "deletedFile":
                    tree.pop(line["value"]["path"], None)
            sha = hashlib.sha1(repr((head, header["summary"], sorted(tree.items()))).encode()).hexdigest()
            repo.commits[sha], repo.parents[sha], repo.titles[sha] = tree, head, header["summary"]
            repo.branches[branch] = sha
            self._json(200, {"commitUrl": f"{server.url}/{repo_id}/commit/{sha}", "commitOid": sha})

        def _tag(self, repo_id: str, repo: Repo, revision: str, body: bytes) -> None:
            tag, sha = json.loads(body)["tag"], repo.resolve(revision)
            if sha is None or tag in repo.tags:
                return self._json(409 if sha else 404, {"error": f"tag {tag}"})
            repo.tags[tag] = sha
            self._json(200, {})

        def _branch(self, repo_id: str, repo: Repo, branch: str, body: bytes) -> None:
            start = (json.loads(body) if body else {}).get("startingPoint") or "main"
            sha = repo.resolve(start)
            if sha is None or branch in repo.branches:
                return self._json(409 if sha else 404, {"error": f"branch {branch}"})
            repo.branches[branch] = sha
            self._json(200, {})

        def do_GET(self) -> None:
            self._route(head=False)

        def do_HEAD(self) -> None:
            self._route(head=True)

        def _route(self, head: bool) -> None:
            parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
            with server.lock:
                if parts[:2] == ["api", "models"]:
                    self._api(parts[2:])
                elif "resolve" in parts:
                    i = parts.index("resolve")
                    self._resolve("/".join(parts[:i]), parts[i + 1], "/".join(parts[i + 2 :]), head)
                else:
                    self._not_found(self.path, head)

        def _api(self, parts: list[str]) -> None:
            if "commits" in parts:
                return self._history(
                    "/".join(parts[: parts.index("commits")]), "/".join(parts[parts.index("commits") + 1 :])
                )
            if "refs" in parts:
                repo = server.repos.get("/".join(parts[: parts.index("refs")]))
                if repo is None:
                    return self._not_found("repo")
                ref = lambda kind, name, sha: {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}  # noqa: E731
                return self._json(
                    200,
                    {
                        "branches": [ref("heads", n, s) for n, s in repo.branches.items()],
                        "tags": [ref("tags", n, s) for n, s in repo.tags.items()],
                        "converts": [],
                    },
                )
            revision = "main"
            if "revision" in parts:
                revision = "/".join(parts[parts.index("revision") + 1 :])
                parts = parts[: parts.index("revision")]
            repo_id = "/".join(parts)
            repo = server.repos.get(repo_id)
            sha = repo.resolve(revision) if repo else None
            if repo is None or sha is None:
                return self._not_found(f"{repo_id}@{revision}")
            siblings = [{"rfilename": path} for path in sorted(repo.commits[sha])]
            return self._json(
                200, {"id": repo_id, "modelId": repo_id, "sha": sha, "siblings": siblings, "private": False}
            )

        def _history(self, repo_id: str, revision: str) -> None:
            repo = server.repos.get(repo_id)
            sha = repo.resolve(revision) if repo else None
            if repo is None or sha is None:
                return self._not_found(f"{repo_id}@{revision}")
            history = []
            while sha is not None:
                title = repo.titles[sha]
                history.append(
                    {"id": sha, "title": title, "message": "", "authors": [], "date": "2026-11-24T00:00:00Z"}
                )
                sha = repo.parents[sha]
            return self._json(200, history)

        def _resolve(self, repo_id: str, revision: str, path: str, head: bool) -> None:
            repo = server.repos.get(repo_id)
            sha = repo.resolve(revision) if repo else None
            if repo is None or sha is None or path not in repo.commits[sha]:
                return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, head)
            body = repo.commits[sha][path]
            etag = hashlib.sha256(body).hexdigest()
            self._send(200, body, {"X-Repo-Commit": sha, "ETag": f'"{etag}"'}, head)

    return Handler
