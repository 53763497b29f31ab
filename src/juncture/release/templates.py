"""Release templates: files ending in `.tpl` are rendered during `deploy:updating` (sandboxed Jinja2) and
written without the suffix, with the deploy's facts and two functions:

    {{ var("DB_HOST") }}              the KV store: the stage's namespace, then app
    {{ var("PORT", ns="job:web") }}   one namespace
    {{ secret("DB_PASSWORD") }}       a secret; the rendered file is then written 0600

A missing key or name fails the deploy, naming the file, the line and the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..state.sqlite import Store
from .local import StepFailed

__all__ = ["SUFFIX", "Values", "render_tar", "render_tree"]

SUFFIX = ".tpl"


class _Missing(Exception):
    pass


class Values:
    """What `var()` and `secret()` read: the store, namespaces tried in order."""

    def __init__(self, store: Store, namespaces: tuple[str, ...]) -> None:
        self.store = store
        self.namespaces = namespaces
        self.secret_used = False

    def lookup(self, key: str, ns: str | None, secret: bool) -> str:
        namespaces = (ns,) if ns else self.namespaces
        item = self.store.find(key, namespaces, secret)
        if item is None or item.value is None:
            kind = "secret" if secret else "variable"
            raise _Missing(f"no {kind} {key!r} in {' or '.join(namespaces)}")
        self.secret_used = self.secret_used or secret
        return item.value


def render_text(name: str, text: str, context: Mapping[str, object], values: Values) -> tuple[str, bool]:
    """`text` rendered; whether it used a secret."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    values.secret_used = False
    functions = {
        "var": lambda key, ns=None: values.lookup(key, ns, secret=False),
        "secret": lambda key, ns=None: values.lookup(key, ns, secret=True),
    }
    try:
        template = env.template_class.from_code(
            env, env.compile(text, name, name), env.make_globals(functions), None
        )
        return template.render(context), values.secret_used
    except jinja2.TemplateSyntaxError as exc:
        raise StepFailed(f"{name}:{exc.lineno}: template: {exc.message}") from None
    except (_Missing, jinja2.TemplateError) as exc:
        import traceback  # only to find the template's line

        lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == name]
        where = f"{name}:{lines[-1]}" if lines else name
        message = str(exc) if isinstance(exc, _Missing) else f"template: {exc}"
        raise StepFailed(f"{where}: {message}") from None


def render_tree(root: str, paths: list[str], context: Mapping[str, object], values: Values) -> list[str]:
    """Render the `.tpl` files `paths` of `root` (the release being built) in place; the rendered ones."""
    rendered = []
    for path in paths:
        if os.path.islink(path):
            continue
        with open(path, encoding="utf-8") as handle:
            text, secret = render_text(os.path.relpath(path, root), handle.read(), context, values)
        mode = 0o600 if secret else os.stat(path).st_mode & 0o777
        final = path[: -len(SUFFIX)]
        fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(final, mode)
        os.unlink(path)
        rendered.append(final)
    return rendered


def render_tar(data: bytes, context: Mapping[str, object], values: Values) -> tuple[bytes, int]:
    """The release tar with its `.tpl` members rendered (for hosts: rendered here, sent rendered)."""
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(data)) as source:
        members = source.getmembers()
        if not any(m.isreg() and m.name.endswith(SUFFIX) for m in members):
            return data, 0
        out = io.BytesIO()
        count = 0
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for member in members:
                handle = source.extractfile(member) if member.isreg() else None
                if handle is None or not member.name.endswith(SUFFIX):
                    tar.addfile(member, handle)
                    continue
                text, secret = render_text(member.name, handle.read().decode(), context, values)
                body = text.encode()
                member.name = member.name[: -len(SUFFIX)]
                member.size = len(body)
                member.mode = 0o600 if secret else member.mode
                tar.addfile(member, io.BytesIO(body))
                count += 1
    return out.getvalue(), count
