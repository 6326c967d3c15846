"""The command line's shape, in-process and without running anything heavy:
every command and bench measure has a parser whose ``--help`` works, the
bench sub-commands cover their measures' options, the flat bench options of
earlier versions still work with a one-line note naming the new spelling,
and every module of the cli package stays small."""

import json
import pathlib
import shlex
import subprocess
import sys

import pytest

from keras_densenet import cli
from keras_densenet.benchmarks import bench
from keras_densenet.cli import bench as cli_bench
from keras_densenet.cli import bench_measures
from tests.helpers import SCRIPTS

CLI_DIR = pathlib.Path(cli.__file__).parent
COMMANDS = ("train", "segment", "predict", "features", "export", "table", "bench", "convert", "reuse")
#: The most lines a module of the cli package may have.
MAX_CLI_LINES = 250


def test_every_command_has_a_parser():
    parser = cli.build_parser()
    assert set(parser.subcommands) == set(COMMANDS)
    for command in cli.COMMANDS:
        assert callable(command.add_parser)


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command, capsys):
    out = _help(capsys, command)
    assert out.startswith(f"usage: keras-densenet {command} ") and "--backend" in out


@pytest.mark.parametrize("measure", bench.MEASURES)
def test_help_of_every_bench_measure(measure, capsys):
    out = _help(capsys, "bench", measure)
    assert out.startswith(f"usage: keras-densenet bench {measure} ") and "--json" in out


def test_bench_help_lists_the_measures(capsys):
    out = _help(capsys, "bench")
    assert all(f"    {measure} " in out for measure in bench.MEASURES), out
    assert "--runtimes-variant" not in out.split("options:")[1].split("The flat options")[0]  # hidden


@pytest.mark.parametrize("measure", bench.MEASURES)
def test_each_measure_takes_every_option_it_reads(measure):
    """A sub-command's options are the `BenchOptions` fields its measure reads."""
    parser = cli.build_parser().subcommands["bench"]
    sub = next(a for a in parser._actions if a.dest == "bench_measure").choices[measure]
    dests = {a.dest for a in sub._actions} - {"help", "backend", "json_path"}
    assert dests == set(bench.MEASURE_FIELDS[measure])


@pytest.mark.parametrize("measure", bench.MEASURES)
def test_bench_measures_are_checked_before_keras_is_imported(measure):
    args = cli.build_parser().parse_args(["bench", measure])
    assert args.check is cli_bench.check and args.func is cli_bench.run
    assert args.cli_parser.prog == f"keras-densenet bench {measure}"


@pytest.mark.parametrize("position", ["before", "after"])
def test_backend_option_before_or_after_a_bench_measure(position):
    argv = ["--backend", "torch", "bench", "time"] if position == "before" else ["bench", "time", "--backend", "torch"]
    args = cli.build_parser().parse_args(argv)
    assert args.backend == "torch" and args.bench_measure == "time"


@pytest.fixture
def bench_runs(monkeypatch):
    """Replaces the benchmark: records what each `bench.run` was asked."""
    runs = []

    def run(measure, options, json_path=None, out=None):
        runs.append((bench.measures(measure), options, json_path))
        return {}

    monkeypatch.setattr(bench, "run", run)
    return runs


#: Earlier spellings: the flat options -> what runs, and the new spelling
#: the note names (the first command, for several measures).
FLAT = [
    (["--measure", "runtimes", "--runtimes-variant", "densenet169", "--runtimes-size", "64"],
     "keras-densenet bench runtimes --variant densenet169 --size 64"),
    (["--measure", "throughput", "--throughput-batch", "8", "--rounds", "2", "--json", "tp.json"],
     "keras-densenet bench throughput --batch 8 --rounds 2 --json tp.json"),
    (["--measure", "step", "--step-sizes", "16,32", "--step-count", "3", "--onednn", "default,on"],
     "keras-densenet bench step --sizes 16,32 --steps 3 --onednn default,on"),
    (["--measure", "time,rss", "--time-batch", "64", "--steps", "3"],
     "keras-densenet bench time --batch 64 --steps 3"),
    (["--measure", "build", "--variants", "densenet121", "--repeats", "1", "--backends", "jax"],
     "keras-densenet bench build --backends jax --variants densenet121 --repeats 1"),
    (["--measure", "activations", "--image-size", "32"], "keras-densenet bench activations --size 32"),
    (["--backends", "jax"], "keras-densenet bench activations"),
    (["--measure", "runtimes", "--runtimes-candidates", "onnx", "--runtimes-threads", "2", "--runtimes-batch", "4",
      "--runtimes-dir", "a dir"],
     "keras-densenet bench runtimes --batch 4 --threads 2 --candidates onnx --dir 'a dir'"),
]


@pytest.mark.parametrize("argv, first", FLAT, ids=[" ".join(a[:2]) for a, _ in FLAT])
def test_flat_bench_options_still_work_with_a_note(argv, first, bench_runs, capsys):
    assert cli.main(["bench", *argv]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    notes = [line for line in err if line.startswith("keras-densenet bench: note:")]
    assert len(notes) == 1, err
    commands = notes[0].split("`")[1::2]
    assert commands[0] == first, notes[0]
    (measures, old, json_path), = bench_runs
    assert len(commands) == len(measures)
    # Each new spelling asks its measure for what the flat options asked.
    for command, measure in zip(commands, measures, strict=True):
        assert cli.main(shlex.split(command)[1:]) == 0
        (new_measures, new, new_json), = bench_runs[1:]
        del bench_runs[1:]
        assert new_measures == (measure,)
        assert all(getattr(new, f) == getattr(old, f) for f in bench.MEASURE_FIELDS[measure])
        assert new_json == (json_path if len(measures) == 1 else None)


@pytest.mark.parametrize("argv", [[], ["--json", "out.json"]])
def test_bare_bench_runs_the_default_measures_without_a_note(argv, bench_runs, capsys):
    assert cli.main(["bench", *argv]) == 0
    assert "note" not in capsys.readouterr().err
    (measures, options, json_path), = bench_runs
    assert measures == bench.DEFAULT_MEASURES and options == bench.BenchOptions()
    assert json_path == (argv[1] if argv else None)


@pytest.mark.parametrize("argv, option", [
    (["--measure", "step", "--step-sizes", "0"], "--step-sizes"),
    (["--measure", "runtimes", "--runtimes-size", "16"], "--runtimes-size"),
    (["--measure", "throughput", "--precision", "float8"], "--precision"),
    (["--measure", "speed"], "--measure"),
])
def test_bad_flat_options_are_one_line_in_their_own_words(argv, option, bench_runs, capsys):
    assert cli.main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("keras-densenet bench: error:") and option in err[0], err
    assert bench_runs == []


def test_measure_with_a_sub_command_is_one_line(bench_runs, capsys):
    assert cli.main(["bench", "--measure", "time", "step"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--measure" in err[0] and "`keras-densenet bench step`" in err[0], err
    assert bench_runs == []


def test_flat_options_before_a_measure_apply_to_it(bench_runs):
    assert cli.main(["bench", "--backends", "jax", "step", "--sizes", "16"]) == 0
    (measures, options, _), = bench_runs
    assert measures == ("step",) and options.backends == ("jax",) and options.step_sizes == (16,)


def test_unknown_measure_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "speed"])
    assert exit_.value.code == 2 and "invalid choice: 'speed'" in capsys.readouterr().err


def test_list_fields_are_the_tuple_fields():
    defaults = bench.BenchOptions()
    assert set(bench_measures.LIST_FIELDS) == {f for f in vars(defaults) if isinstance(getattr(defaults, f), tuple)}


def test_every_cli_module_is_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in CLI_DIR.glob("*.py")}
    assert {"__init__.py", "common.py", "bench.py", "bench_measures.py"} <= set(sizes)
    assert {name: n for name, n in sizes.items() if n > MAX_CLI_LINES} == {}


def test_bench_modules_are_at_most_500_lines():
    for module in (bench, sys.modules["keras_densenet.benchmarks.bench_worker"]):
        assert len(pathlib.Path(module.__file__).read_text().splitlines()) <= 500, module.__name__


@pytest.mark.parametrize("module", ["keras_densenet", "keras_densenet.cli"])
def test_python_dash_m_runs_the_cli(module):
    proc = subprocess.run([sys.executable, "-m", module, "bench", "runtimes", "--help"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--candidates" in proc.stdout


def test_bad_bench_options_are_answered_before_keras_is_imported():
    for argv in (["bench", "runtimes", "--size", "16"], ["bench", "--measure", "step", "--step-count", "0"]):
        proc = subprocess.run([sys.executable, str(SCRIPTS / "cli_without_keras.py"), *argv], capture_output=True,
                              text=True, timeout=240)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("command, model", [("predict", ["--arch", "densenet121"]),
                                            ("features", ["--arch", "densenet121", "--output", "f.npy"])])
def test_image_commands_share_their_inputs_and_batching_options(command, model, tmp_path):
    args = cli.build_parser().parse_args([command, "a.png", "dir/", "*.jpg", *model, "--batch-size", "5"])
    inputs = args.images if command == "predict" else args.inputs
    assert inputs == ["a.png", "dir/", "*.jpg"] and args.batch_size == 5 and args.workers is None
    argv = [command, str(tmp_path), *model, "--workers", "0"]
    proc = subprocess.run([sys.executable, str(SCRIPTS / "cli_without_keras.py"), *argv], capture_output=True,
                          text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["keras-densenet " + command + ": error: --workers must be an "
                                                "integer >= 1. Received: 0"]


def test_bench_volume_is_a_bench_sub_command_checked_before_keras():
    args = cli.build_parser().parse_args(["bench", "volume", "--photos", "2,3", "--image-shape", "40x30"])
    assert args.func is bench_measures.run_volume and args.check is bench_measures.check_volume
    assert bench_measures._volume_kwargs(args)["photos"] == [2, 3] and args.image_shape == (40, 30)
    for argv in (["bench", "volume", "--photos", "2,x"], ["bench", "volume", "--arch", "densenet99"]):
        proc = subprocess.run([sys.executable, str(SCRIPTS / "cli_without_keras.py"), *argv], capture_output=True,
                              text=True, timeout=240)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, (argv, proc.stderr)


# In TensorFlow's suite, the shortest; on JAX every process compiles its model (about a minute).
@pytest.mark.one_backend("tensorflow", "torch", "jax", reason="a smoke run of the benchmark's processes")
@pytest.mark.timeout(600)
def test_bench_volume_runs_on_a_few_small_generated_images(tmp_path, capsys):
    """No speed asserted: the figures live in docs/performance.md."""
    code = cli.main(["bench", "volume", "--photos", "2,3", "--photo-size", "64x48", "--images", "4",
                     "--image-shape", "40x30", "--arch", "densenet_bc_100_k12", "--size", "32", "--batch", "2",
                     "--rss-batch", "1", "--rounds", "1", "--dir", str(tmp_path), "--json", str(tmp_path / "v.json")])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads((tmp_path / "v.json").read_text())
    assert sorted(result["rss"]) == ["2", "3"] and all(r["count"] in (2, 3) for r in result["rss"].values())
    assert set(result["throughput"]) == {"ceiling", "predict"} and result["throughput_ratio"] > 0
    assert "| peak RSS, predict over 3 photos of 64x48" in out and "predict / ceiling" in out
    assert len(list((tmp_path / "photos_64x48").glob("*.jpg"))) == 3
