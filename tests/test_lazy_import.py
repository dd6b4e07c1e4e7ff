"""``import framecast.protocol`` costs the wire format alone; the package's names load on first use.

The server and every encoder process import ``framecast.protocol``; ``framecast/__init__.py`` runs
first, and used to import the writers, httpx and websockets with it. The checks that need a fresh
interpreter run in a subprocess: in this one, other tests have long imported everything.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import framecast


def run_fresh(code: str) -> str:
    """Run ``code`` in a new interpreter; return its stdout, failing the test on a nonzero exit."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_protocol_module_imports_neither_httpx_nor_websockets() -> None:
    run_fresh("""
        import framecast.protocol, sys
        assert 'httpx' not in sys.modules and 'websockets' not in sys.modules, sorted(sys.modules)
        assert 'framecast.writer' not in sys.modules and 'framecast.aio' not in sys.modules
    """)


def test_public_names_import_on_first_use() -> None:
    out = run_fresh("""
        import sys
        from framecast import StreamWriter
        import framecast.writer
        assert StreamWriter is framecast.writer.StreamWriter
        assert 'websockets' in sys.modules and 'framecast.aio' not in sys.modules
        import framecast
        print(framecast.AsyncStreamWriter.__module__, framecast.rest.__name__)
    """)
    assert out.split() == ["framecast.aio", "framecast.rest"]


def test_every_public_name_resolves_to_its_module() -> None:
    assert sorted(framecast.__all__) == sorted(framecast._EXPORTS)
    for name in framecast.__all__:
        value = getattr(framecast, name)
        assert value.__module__ == f"framecast.{framecast._EXPORTS[name]}", name
    assert set(framecast.__all__) <= set(dir(framecast))


def test_an_unknown_name_is_an_attribute_error_that_says_where_to_look() -> None:
    with pytest.raises(
        AttributeError,
        match=r"^module 'framecast' has no attribute 'StreamWritr'; "
        r"its public names are listed in framecast.__all__$",
    ) as info:
        framecast.StreamWritr  # noqa: B018
    assert info.value.name == "StreamWritr"
    with pytest.raises(ImportError, match="cannot import name 'Nothing'"):
        from framecast import Nothing  # noqa: F401
    # The suggestion Python prints under the traceback comes from name and obj.
    result = subprocess.run(
        [sys.executable, "-c", "import framecast; framecast.StreamWritr"], capture_output=True, text=True, timeout=60
    )
    assert "Did you mean: 'StreamWriter'?" in result.stderr
