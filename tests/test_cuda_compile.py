"""Every CUDA kernel source compiles for sm_80 and sm_90, float32 and float64, without a GPU.

The compiler is NVRTC (through CuPy's bindings, or loaded directly from the
nvidia-cuda-nvrtc-cu12 wheel), else ``nvcc``; these tests skip only when none of them
can run, with the reason for each. The options are those CuPy uses on a GPU, and the
output is a real cubin (SASS), so ptxas errors are caught too. Further checks keep the
kernels and the host code honest: every kernel declared in ``sources.py`` is in the
binary and nothing else is, every cupy override module takes its kernels from
``sources.py``, and the overrides keep the reference signatures.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fastnn.kernels.cuda import compile as cuda_compile
from fastnn.kernels.cuda import sources
from fastnn.kernels.registry import OVERRIDES, REFERENCE_OPS, load_reference_ops, op_signature

ARCHS = ["sm_80", "sm_90"]
DTYPES = ["float32", "float64"]
CUDA_PACKAGE = Path(sources.__file__).parent
COVERED_OPS = {
    "activation_forward",
    "activation_backward",
    "bias_activation",
    "bias_activation_backward",
    "softmax",
    "softmax_backward",
    "log_softmax",
    "softmax_cross_entropy",
    "sparse_softmax_cross_entropy",
    "sgd_update",
    "adam_update",
    "adagrad_update",
    "rmsprop_update",
    "adadelta_update",
    "adamw_update",
    "adamax_update",
    "nadam_update",
    "clip_gradient",
}
CUBLAS_OPS = {"matmul", "linear", "linear_backward"}
KERNEL_FACTORIES = {"RawKernel", "RawModule", "ElementwiseKernel", "ReductionKernel"}


@pytest.fixture(scope="module")
def compiler() -> str:
    """The CUDA compiler that works here; skips with every reason when none does."""
    try:
        return cuda_compile.find_compiler()
    except cuda_compile.CudaCompilerUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def cupy_overrides() -> dict:
    """The cupy override table, after importing the CUDA package (no GPU needed)."""
    load_reference_ops()
    import fastnn.kernels.cuda  # noqa: F401  (registers the overrides)

    return OVERRIDES["cupy"]


# -- compiling ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("family", sorted(sources.SOURCES))
def test_kernel_source_compiles(compiler, family, arch, dtype):
    src = sources.SOURCES[family]
    result = cuda_compile.compile_kernel_source(src, dtype, arch, compiler=compiler)
    names = src.kernel_names(dtype)
    assert result.arch == arch
    assert result.cubin[:4] == b"\x7fELF", f"{compiler} returned no cubin for {arch}"
    assert set(result.lowered_names) == set(names)
    for name in names:
        assert result.lowered_names[name] == name, "kernels must have extern \"C\" names"
        assert result.cubin_has_symbol(name), f"{name} missing from the {arch} cubin"
    if result.ptx:
        # Exactly the declared kernels: nothing in the source escapes this test.
        assert result.ptx_entries() == set(names)
    assert "warning" not in result.log.lower(), result.log


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_do_not_spill(compiler, dtype):
    """ptxas reports no register spills for any kernel (sm_90)."""
    for src in sources.SOURCES.values():
        options = (*cuda_compile.offline_options(), "--ptxas-options=-v")
        try:
            result = cuda_compile.compile_source(
                src.code(dtype), "sm_90", options=options, compiler=compiler
            )
        except cuda_compile.CudaCompileError as exc:
            if "ptxas-options" in exc.log:
                pytest.skip(f"{compiler} does not take --ptxas-options: {exc.log.strip()}")
            raise
        entries = re.findall(r"Compiling entry function '(\w+)'", result.log)
        assert set(entries) == set(src.kernel_names(dtype)), result.log
        spills = [int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", result.log)]
        assert spills and not any(spills), result.log


@pytest.mark.parametrize("name", cuda_compile.COMPILERS)
def test_each_available_compiler_agrees(name):
    """Every compiler path that can run here builds the same kernels (others skip)."""
    reason = cuda_compile.compiler_unavailable_reason(name)
    if reason is not None:
        pytest.skip(f"{name} cannot run here: {reason}")
    src = sources.SOFTMAX
    result = cuda_compile.compile_kernel_source(src, "float64", "sm_90", compiler=name)
    assert result.compiler == name
    assert result.ptx_entries() == set(src.kernel_names("float64"))
    assert all(result.cubin_has_symbol(k) for k in src.kernel_names("float64"))


def test_compile_error_carries_the_log(compiler):
    with pytest.raises(cuda_compile.CudaCompileError) as info:
        cuda_compile.compile_source("this is not CUDA", "sm_80", compiler=compiler)
    assert "sm_80" in str(info.value)
    assert "error" in info.value.log


def test_no_compiler_says_what_was_tried(monkeypatch):
    failing = {name: "OSError: not installed (test)" for name in cuda_compile.COMPILERS}
    monkeypatch.setattr(cuda_compile, "_probe_results", failing)
    monkeypatch.delenv(cuda_compile.ENV_VAR, raising=False)
    with pytest.raises(cuda_compile.CudaCompilerUnavailableError) as info:
        cuda_compile.find_compiler()
    for name in cuda_compile.COMPILERS:
        assert f"{name}: OSError: not installed (test)" in str(info.value)
    assert "nvidia-cuda-nvrtc-cu12" in str(info.value)
    monkeypatch.setenv(cuda_compile.ENV_VAR, "clang")
    with pytest.raises(ValueError, match="FASTNN_CUDA_COMPILER='clang'"):
        cuda_compile.find_compiler()


@pytest.mark.parametrize(
    ("arch", "expected"), [("sm_80", "sm_80"), (90, "sm_90"), ("compute_90", "sm_90")]
)
def test_normalize_arch(arch, expected):
    assert cuda_compile.normalize_arch(arch) == expected


# -- sources -----------------------------------------------------------------------------


def test_declared_kernels_match_the_source_text():
    seen = set()
    for src in sources.SOURCES.values():
        assert src.declared_kernels() == src.kernels, src.name
        for base in src.kernels:
            assert base.startswith("fastnn_")
            assert base not in seen, f"{base} declared twice"
            seen.add(base)
        for dtype in DTYPES:
            code = src.code(dtype)
            assert code.isascii()
            assert f"{src.macro}({sources.DTYPES[dtype][0]}, {sources.DTYPES[dtype][1]})" in code
    assert sorted(seen) == sorted(sources.all_kernel_names())


def test_register_source_refuses_clashes():
    softmax = sources.SOFTMAX
    assert sources.register_source(softmax) is softmax
    clashes = [
        (sources.KernelSource("softmax", softmax.kernels, softmax.body), "already registered"),
        (sources.KernelSource("softmax_copy", softmax.kernels, softmax.body), "names taken"),
        (sources.KernelSource("odd", ("fastnn_odd",), softmax.body), "but its text defines"),
    ]
    for family, message in clashes:
        with pytest.raises(ValueError, match=message):
            sources.register_source(family)
    assert sources.SOURCES["softmax"] is softmax
    assert "softmax_copy" not in sources.SOURCES and "odd" not in sources.SOURCES


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="received dtype float16"):
        sources.SOFTMAX.code("float16")
    with pytest.raises(KeyError):
        sources.SOFTMAX.kernel_name("fastnn_nope", "float32")


# -- host code ---------------------------------------------------------------------------


def test_cupy_overrides_keep_reference_signatures(cupy_overrides):
    assert set(cupy_overrides) >= COVERED_OPS
    assert not CUBLAS_OPS & set(cupy_overrides), "matmul stays on cuBLAS (reference ops)"
    for name, fn in cupy_overrides.items():
        assert name in REFERENCE_OPS, f"cupy override {name!r} has no reference op"
        assert op_signature(fn) == op_signature(REFERENCE_OPS[name]), (
            f"cupy override of {name!r} has signature {op_signature(fn)}, "
            f"reference has {op_signature(REFERENCE_OPS[name])}"
        )


def _string_constants(tree: ast.AST) -> list[str]:
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def _called_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                names.add(func.attr)
            elif isinstance(func, ast.Name):
                names.add(func.id)
    return names


def test_cupy_override_modules_take_their_kernels_from_sources(cupy_overrides):
    """Nothing escapes the compile test: CUDA text lives only in sources registered in
    sources.SOURCES, kernels are built only by compile.get_kernel, and every kernel name
    used is a declared one."""
    modules = {fn.__module__ for fn in cupy_overrides.values()}
    # Modules that the activation ops dispatch to by name (ops.EXTRA_ACTIVATIONS) launch too.
    from fastnn.kernels.cuda import ops as cuda_ops

    modules |= {fn.__module__ for fns in cuda_ops.EXTRA_ACTIVATIONS.values() for fn in fns}
    declared = set(sources.all_kernel_names())
    used: set[str] = set()
    for module in sorted(modules):
        assert module.startswith("fastnn.kernels.cuda."), f"cupy override in {module}"
        path = CUDA_PACKAGE / (module.rsplit(".", 1)[1] + ".py")
        tree = ast.parse(path.read_text())
        imported = {
            node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        }
        assert "fastnn.kernels.cuda.sources" in imported, f"{path.name} must use sources.py"
        kernel_names = {s for s in _string_constants(tree) if re.fullmatch(r"fastnn_\w+", s)}
        assert kernel_names <= declared, f"{path.name} launches undeclared kernels"
        used |= kernel_names
    assert used == declared, f"declared but never launched: {sorted(declared - used)}"
    registered_bodies = [src.body for src in sources.SOURCES.values()]
    for path in sorted(CUDA_PACKAGE.glob("*.py")):
        module = f"fastnn.kernels.cuda.{path.stem}" if path.stem != "__init__" else None
        assert module is None or module in sys.modules, (
            f"{path.name} is not imported by fastnn.kernels.cuda: its kernels would escape"
        )
        tree = ast.parse(path.read_text())
        for text in _string_constants(tree):
            # CUDA text may live in sources.py or in a family module registering into
            # sources.SOURCES, but only as part of a registered (hence compiled) source.
            if "__global__" in text:
                assert any(text in body for body in registered_bodies), (
                    f"{path.name} holds CUDA source that is not in sources.SOURCES"
                )
        factories = _called_names(tree) & KERNEL_FACTORIES
        allowed = {"RawModule"} if path.name == "compile.py" else set()
        assert factories <= allowed, f"{path.name} builds kernels itself: {factories}"


def test_importing_the_cuda_package_needs_no_gpu_and_no_cupy(tmp_path):
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'cupy':\n"
        "            raise ImportError(f'No module named {name!r} (blocked by test)')\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    code = (
        "import sys\n"
        "import fastnn.kernels.cuda\n"
        "from fastnn.kernels.registry import OVERRIDES\n"
        "assert 'cupy' not in sys.modules\n"
        "print(sorted(OVERRIDES['cupy']))\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(root)]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "softmax_cross_entropy" in out.stdout
