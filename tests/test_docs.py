"""The documentation: it builds, its reference matches the code, and its examples run."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pytest_vdens
from pytest_vdens.plugin import KEYS, MARKER

pytestmark = pytest.mark.timeout(300)

DOCS = Path(__file__).parent.parent / "docs"
EXAMPLES = DOCS / "examples"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", *args)


def copy_example(pytester: pytest.Pytester, name: str) -> None:
    src = EXAMPLES / name
    if src.is_dir():
        shutil.copytree(src, pytester.path, dirs_exist_ok=True)
    else:
        shutil.copy(src, pytester.path)


def section(page: str, heading: str) -> str:
    """The text of a Markdown page under `heading`, up to the next heading."""
    text = (DOCS / page).read_text()
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    end = re.search(r"^#", text[start:], re.M)
    return text[start:start + end.start()] if end else text[start:]


def table(page: str, heading: str) -> list[list[str]]:
    """The cells of the first table under `heading`, header row left out."""
    rows = [line for line in section(page, heading).splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]
    return [row for row in cells[2:]]


def code(cell: str) -> list[str]:
    return [c.replace("\\|", "|") for c in re.findall(r"`([^`]+)`", cell)]


def test_the_docs_build_with_warnings_as_errors(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(DOCS), str(tmp_path / "html")], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    api = (tmp_path / "html" / "api.html").read_text()
    assert 'id="pytest_vdens.Namespace.run"' in api  # autodoc found the code


# -- the reference matches the code -----------------------------------------------------


def test_the_marker_reference_matches_the_marker() -> None:
    signature = MARKER.split("):", 1)[0] + ")"  # vdens(nets=None, iface="vde", ...)
    call = ast.parse(signature, mode="eval").body
    assert isinstance(call, ast.Call)
    in_help = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    documented = {code(name)[0]: ast.literal_eval(code(default)[0])
                  for name, default, _ in table("reference.md", "### Marker arguments")}
    assert list(in_help) == list(KEYS)  # the help names every argument
    assert documented == in_help
    shown = " ".join(section("reference.md", "## The marker").split("```")[1].split()[1:])
    assert shown == "@pytest.mark." + " ".join(signature.split())


def test_the_fixture_reference_matches_the_plugin(pytester: pytest.Pytester) -> None:
    out = run(pytester, "--fixtures").stdout.str()
    ours = re.split(r"\n-+ fixtures defined from ", out.split(
        " fixtures defined from pytest_vdens.plugin ")[1])[0]
    found = {m[1]: m[2] or "function"
             for m in re.finditer(r"^(\w+)(?: \[(\w+) scope\])? -- ", ours, re.M)}
    documented = {code(name)[0]: scope for name, scope, _ in table("reference.md", "## Fixtures")}
    assert found and documented == found


def test_the_option_reference_matches_pytest_help(pytester: pytest.Pytester) -> None:
    out = run(pytester, "--help").stdout.str()
    group = out.split("private network namespaces (pytest-vdens):\n")[1].split("\n\n")[0]
    options = set(re.findall(r"^  (--vdens-[\w-]+)", group, re.M))
    inis = set(re.findall(r"^  (vdens_\w+) \(", out, re.M))
    rows = table("reference.md", "## Options and ini keys")
    documented = {code(option)[0].split()[0]: code(ini)[0] for option, ini, _ in rows}
    assert set(documented) == options
    assert set(documented.values()) == inis
    for option, ini in documented.items():
        assert ini == option[2:].replace("-", "_")


def test_the_pyvdens_reference_matches_its_help() -> None:
    help_ = subprocess.run([sys.executable, "-m", "pytest_vdens", "--help"],
                           capture_output=True, text=True, check=True).stdout
    usage, rest = help_.split("\n\n", 1)
    options_part = rest.split("options:\n", 1)[1].split("\n\n")[0]
    options = {word.split()[0] for line in options_part.splitlines()
               if (m := re.match(r"  (-\S.*?)(?:\s{2,}|$)", line)) for word in m[1].split(", ")}
    documented = {c.split()[0] for name, _ in table("pyvdens.md", "## Options") for c in code(name)}
    assert documented == options
    synopsis = section("pyvdens.md", "## Synopsis").split("```")[1].split("\n", 1)[1]
    assert synopsis.strip() == usage.removeprefix("usage: ").strip()


def test_the_api_reference_covers_the_public_api() -> None:
    documented = re.findall(r"\.\. auto\w+:: pytest_vdens\.(\w+)", (DOCS / "api.md").read_text())
    assert sorted(documented) == sorted(pytest_vdens.__all__)


# -- every example runs as the pages say ------------------------------------------------


def console(page: str) -> list[tuple[str, list[str]]]:
    """The commands of a page's console blocks, with the output lines shown for each."""
    found: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", (DOCS / page).read_text(), re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                found.append((line[2:], []))
            elif found:
                found[-1][1].append(line)
    return found


def test_the_tutorial_runs_as_shown(pytester: pytest.Pytester) -> None:
    copy_example(pytester, "tutorial/test_tutorial.py")
    ran = 0
    for command, shown in console("tutorial.md"):
        if command == "pytest --markers | grep vdens":
            out = run(pytester, "--markers").stdout
            out.fnmatch_lines([shown[0].replace("...", "*")])
        elif command.startswith("pytest "):
            result = run(pytester, *command.split()[1:])
            assert result.ret == 0
            result.stdout.fnmatch_lines([f"*{line}*" for line in shown])
        else:
            continue
        ran += 1
    assert ran == 4


def test_port_80(pytester: pytest.Pytester) -> None:
    copy_example(pytester, "test_port80.py")
    run(pytester).assert_outcomes(passed=2)


def test_resolver(pytester: pytest.Pytester) -> None:
    copy_example(pytester, "test_resolver.py")
    run(pytester).assert_outcomes(passed=2)


def test_capabilities(pytester: pytest.Pytester) -> None:
    copy_example(pytester, "test_caps.py")
    run(pytester).assert_outcomes(passed=4)


def test_external_switch(pytester: pytest.Pytester, vde_switch: str) -> None:
    copy_example(pytester, "test_external_switch.py")
    run(pytester, "--vdens-switch", vde_switch).assert_outcomes(passed=2)
    result = run(pytester, "-v", "--vdens-switch", vde_switch, "--vdens-switch", vde_switch)
    result.assert_outcomes(passed=4)  # each test against each switch


def test_slirp(pytester: pytest.Pytester) -> None:
    copy_example(pytester, "test_slirp.py")
    run(pytester).assert_outcomes(passed=2)


def test_routers(pytester: pytest.Pytester) -> None:
    copy_example(pytester, "test_routers.py")
    run(pytester).assert_outcomes(passed=1)


def test_degrade_links(pytester: pytest.Pytester) -> None:
    copy_example(pytester, "test_degrade.py")
    result = run(pytester)
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("skipped", 0) == 4, outcomes
    assert outcomes.get("passed", 0) >= 3, outcomes
    if outcomes.get("skipped"):  # only netem may skip, and only for want of it
        result.stdout.fnmatch_lines(["SKIPPED*this kernel has no sch_netem module"])


def test_the_readme_example_runs_and_its_links_exist(pytester: pytest.Pytester) -> None:
    readme = (DOCS.parent / "README.md").read_text()
    example = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert len(example) == 1 and len(example[0].splitlines()) <= 10
    pytester.makepyfile(example[0])
    run(pytester).assert_outcomes(passed=2)
    links = re.findall(r"\]\(((?!https?:)[^)]+)\)", readme)
    assert links and all((DOCS.parent / link).exists() for link in links), links


INLINE = [(page, code) for page in sorted(DOCS.rglob("*.md"))
          for code in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)]


@pytest.mark.parametrize("page, code", INLINE, ids=[str(p.relative_to(DOCS)) for p, _ in INLINE])
def test_each_inline_example_runs(pytester: pytest.Pytester, page: Path, code: str) -> None:
    if "def test_" in code:  # a test: pytest runs it
        pytester.makepyfile(code)
        result = run(pytester)
        assert result.ret == 0 and result.parseoutcomes().get("passed"), result.stdout.str()
    else:  # a script
        out = subprocess.run([sys.executable, "-c", code], cwd=pytester.path, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr


def test_captures(pytester: pytest.Pytester) -> None:
    copy_example(pytester, "test_captures.py")
    result = run(pytester, f"--basetemp={pytester.path / 'bt'}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*- vdens network state -*", "ns0 (vde0 on vde://*", "*10.0.0.1/24*",
        "*- vdens capture -*", "*/test_the_server_answers0/vdens-capture/ns0/vde0.pcap",
        "*ns0/vde0 out IPv4 10.0.0.1:* > 10.0.0.2:8080 TCP ?S?*",
        "*ns0/vde0 in  IPv4 10.0.0.2:8080 > 10.0.0.1:* TCP ?R.?*"])
    shown = subprocess.run(["tcpdump", "-nr", str(pytester.path / "bt/test_the_server_answers0/"
                                                  "vdens-capture/ns1/vde0.pcap")],
                           capture_output=True, text=True, check=True).stdout
    assert re.search(r"10\.0\.0\.2\.8080 > 10\.0\.0\.1\.\d+: Flags \[R\.\]", shown), shown


def test_a_session_server_with_vdens_isolate(pytester: pytest.Pytester) -> None:
    copy_example(pytester, "isolate")
    run(pytester, "-n", "2", "--vdens-isolate").assert_outcomes(passed=8)


PYVDENS = [sys.executable, "-m", "pytest_vdens"]  # what the pyvdens script runs


def test_the_pyvdens_examples(vde_switch: str, tmp_path: Path) -> None:
    resolv = subprocess.run([*PYVDENS, "-R", "10.0.0.53", "-", "cat", "/etc/resolv.conf"],
                            capture_output=True, text=True, check=True)
    assert resolv.stdout == "nameserver 10.0.0.53\n"
    other = subprocess.Popen(["vde_switch", "-s", str(tmp_path / "b")], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if (tmp_path / "b" / "ctl").exists():
                break
            time.sleep(0.05)
        links = subprocess.run([*PYVDENS, "-m", vde_switch, f"vde://{tmp_path / 'b'}", "--",
                                "ip", "-o", "link"], capture_output=True, text=True, check=True)
        names = [line.split(":")[1].strip() for line in links.stdout.splitlines()]
        assert names == ["lo", "vde0", "vde1"]
    finally:
        other.kill()
        other.wait()


def test_the_github_workflow_lifts_the_userns_restriction() -> None:
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((DOCS / "github-actions.yml").read_text())
    steps = workflow["jobs"]["test"]["steps"]
    commands = [step.get("run", "") for step in steps]
    assert workflow["jobs"]["test"]["runs-on"] == "ubuntu-24.04"
    lift = commands.index("sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")
    test = next(i for i, c in enumerate(commands) if c.startswith("pytest "))
    assert lift < test and "sudo" not in commands[test]


EXAMPLE_TESTS = {
    "tutorial/test_tutorial.py": test_the_tutorial_runs_as_shown,
    "test_port80.py": test_port_80,
    "test_resolver.py": test_resolver,
    "test_caps.py": test_capabilities,
    "test_external_switch.py": test_external_switch,
    "test_slirp.py": test_slirp,
    "test_routers.py": test_routers,
    "test_degrade.py": test_degrade_links,
    "test_captures.py": test_captures,
    "isolate/conftest.py": test_a_session_server_with_vdens_isolate,
    "isolate/test_api.py": test_a_session_server_with_vdens_isolate,
}


def test_every_example_is_run_here_and_shown_in_a_page() -> None:
    on_disk = {str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*.py")
               if "__pycache__" not in p.parts}
    assert on_disk == set(EXAMPLE_TESTS)
    pages = "".join(p.read_text() for p in DOCS.rglob("*.md"))
    for example in on_disk:
        assert f"examples/{example}" in pages, f"{example} is in no page"
