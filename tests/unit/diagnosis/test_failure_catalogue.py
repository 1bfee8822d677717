# ruff: noqa: E501  (log excerpts keep their real line lengths)
"""The failure-cause catalogue (bot/diagnosis/data/failure_causes.yaml), line by line against log excerpts written in
the style of real pip, conda, docker, nvidia-container-toolkit, CUDA, PyTorch, clearml-agent and kernel output.

Each excerpt is the tail of a failed task's console log as an agent leaves it; the test asserts the cause the
classifier picks AND that the line a user must see (the evidence) is among the matching lines. Every pattern of the
catalogue must match at least one excerpt line (no dead patterns), and lines of healthy runs match none."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from bot.diagnosis.failure_causes import CAUSE_IDS, CAUSES, CauseName, classify_failure, load_causes

# cause -> [(status_reason, log excerpt, the evidence line that must be among the hits)]
EXCERPTS: dict[str, list[tuple[str, str, str]]] = {
    "python_not_found": [
        ("worker execution exit code 1", """\
Using base prefix '/usr'
clearml_agent: WARNING: Python executable with version '3.8' requested by the Task, not found in path, using '/usr/bin/python3' (v3.10.12) instead
Collecting tensorflow==2.4.1
ERROR: Could not find a version that satisfies the requirement tensorflow==2.4.1 (from versions: 2.8.0, 2.9.0)
clearml_agent: ERROR: Could not install task requirements!""",
         "Python executable with version '3.8' requested by the Task, not found in path"),
        ("worker execution exit code 1", """\
/bin/sh: 1: python3.11: not found
clearml_agent: ERROR: Command '['python3.11', '-m', 'virtualenv', '/root/.clearml/venvs-builds/3.11']' returned non-zero exit status 127.""",
         "python3.11: not found"),
        ("worker execution exit code 1", """\
Creating virtual environment /root/.clearml/venvs-builds/3.7
RuntimeError: failed to find interpreter for Builtin discover of python_spec='python3.7'""",
         "failed to find interpreter for Builtin discover of python_spec='python3.7'"),
        ("", "clearml_agent: ERROR: requested python version 3.6 not available on this worker",
         "requested python version 3.6 not available"),
        ("", "ERROR: Could not find python 3.7 (tried python3.7, python3, python)", "Could not find python 3.7"),
        ("", "pyenv-shim: No python interpreter found for 3.9", "No python interpreter found"),
    ],
    "disk_full": [
        ("worker execution exit code 1", """\
Collecting torch==2.3.0
  Downloading torch-2.3.0-cp310-cp310-manylinux1_x86_64.whl (779.1 MB)
     ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ 412.6/779.1 MB 92.4 MB/s eta 0:00:04
ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device
clearml_agent: ERROR: Could not install task requirements!""",
         "[Errno 28] No space left on device"),
        ("", """\
nvcr.io/nvidia/pytorch:24.05-py3: Pulling from nvidia/pytorch
4f4fb700ef54: Extracting  5.218GB/7.845GB
docker: failed to register layer: write /usr/local/lib/python3.10/dist-packages/torch/lib/libtorch_cuda.so: no space left on device.
See 'docker run --help'.""",
         "failed to register layer"),
        ("", "OSError: [Errno 122] Disk quota exceeded: '/home/ml/.clearml/cache/storage_manager/datasets'",
         "Disk quota exceeded"),
        ("", "tar: ./data/shard-00017.tar: Cannot write: ENOSPC", "ENOSPC"),
        ("", "RuntimeError: not enough free disk space to extract dataset: need 212.4 GB, have 35.1 GB",
         "not enough free disk space"),
    ],
    "image_pull": [
        ("worker execution exit code 125", """\
Unable to find image 'acme/trainer:2.4.1-cuda12' locally
docker: Error response from daemon: pull access denied for acme/trainer, repository does not exist or may require 'docker login': denied: requested access to the resource is denied.
See 'docker run --help'.""",
         "pull access denied for acme/trainer"),
        ("", """\
Unable to find image 'nvidia/cuda:12.4-runtime-ubuntu22.04' locally
docker: Error response from daemon: manifest for nvidia/cuda:12.4-runtime-ubuntu22.04 not found: manifest unknown: manifest unknown.""",
         "manifest for nvidia/cuda:12.4-runtime-ubuntu22.04 not found"),
        ("", """\
Unable to find image 'python:3.10-slim' locally
docker: Error response from daemon: toomanyrequests: You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit.""",
         "toomanyrequests"),
        ("", 'docker: Error response from daemon: Get "https://registry.acme.internal/v2/": dial tcp 10.0.4.12:443: i/o timeout.',
         'Get "https://registry.acme.internal/v2/"'),
        ("", "docker: Error response from daemon: Head \"https://ghcr.io/v2/acme/infer/manifests/1.2\": unauthorized.",
         "unauthorized"),
        ("", "docker: invalid reference format: repository name must be lowercase.", "invalid reference format"),
        ("", "  Warning  Failed     12s   kubelet  Failed to pull image \"acme/trainer:latest\": rpc error: code = "
             "Unknown desc = failed to pull and unpack image; Error: ErrImagePull",
         "Failed to pull image"),
    ],
    "gpu_not_visible": [
        ("worker execution exit code 125",
         'docker: Error response from daemon: could not select device driver "" with capabilities: [[gpu]].',
         'could not select device driver "" with capabilities: [[gpu]]'),
        ("", "docker: Error response from daemon: unknown or invalid runtime name: nvidia.",
         "unknown or invalid runtime name: nvidia"),
        ("", "docker: Error response from daemon: failed to create task for container: failed to create shim task: OCI "
             "runtime create failed: runc create failed: unable to start container process: error during container "
             "init: error running hook #0: error running hook: exit status 1, stdout: , stderr: Auto-detected mode as "
             "'legacy' nvidia-container-cli: initialization error: nvml error: driver not loaded: unknown.",
         "nvidia-container-cli: initialization error"),
        ("worker execution exit code 1", """\
Traceback (most recent call last):
  File "train.py", line 41, in <module>
    model = model.to("cuda")
  File "/usr/local/lib/python3.10/dist-packages/torch/cuda/__init__.py", line 302, in _lazy_init
    torch._C._cuda_init()
RuntimeError: No CUDA GPUs are available""",
         "No CUDA GPUs are available"),
        ("", "RuntimeError: Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and "
             "installed a driver from http://www.nvidia.com/Download/index.aspx",
         "Found no NVIDIA driver on your system"),
        ("", "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest "
             "NVIDIA driver is installed and running.",
         "couldn't communicate with the NVIDIA driver"),
        ("", "2024-06-11 09:14:02.118 E tensorflow/stream_executor/cuda/cuda_driver.cc:271] failed call to cuInit: "
             "CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected",
         "CUDA_ERROR_NO_DEVICE"),
        ("", "RuntimeError: CUDA driver initialization failed, you might not have a CUDA gpu.",
         "CUDA driver initialization failed"),
    ],
    "cuda_mismatch": [
        ("worker execution exit code 1", """\
Traceback (most recent call last):
  File "train.py", line 12, in <module>
    torch.cuda.set_device(0)
RuntimeError: The NVIDIA driver on your system is too old (found version 11040). Please update your GPU driver by downloading and installing a new version from the URL: http://www.nvidia.com/Download/index.aspx Alternatively, go to: https://pytorch.org to install a PyTorch version that has been compiled with your version of the CUDA driver.""",
         "The NVIDIA driver on your system is too old (found version 11040)"),
        ("", "RuntimeError: CUDA error: CUDA driver version is insufficient for CUDA runtime version",
         "CUDA driver version is insufficient for CUDA runtime version"),
        ("", "cudaGetDeviceCount returned 35 -> cudaErrorInsufficientDriver", "cudaErrorInsufficientDriver"),
        ("", "RuntimeError: Unexpected error from cudaGetDeviceCount(). Did you run some cuda functions before "
             "calling NumCudaDevices() that might have already set an error? Error 803: system has unsupported "
             "display driver / cuda driver combination",
         "unsupported display driver / cuda driver combination"),
        ("", "docker: Error response from daemon: failed to create shim task: OCI runtime create failed: ... "
             "nvidia-container-cli: requirement error: unsatisfied condition: cuda>=12.4, please update your driver "
             "to a newer version, or use an earlier cuda container: unknown.",
         "unsatisfied condition: cuda>=12.4"),
        ("", "RuntimeError: CUDA error: no kernel image is available for execution on the device",
         "no kernel image is available for execution on the device"),
        ("", "UserWarning: NVIDIA H100 80GB HBM3 with CUDA capability sm_90 is not compatible with the current "
             "PyTorch installation.",
         "with CUDA capability sm_90 is not compatible with the current PyTorch installation"),
        ("", 'AssertionError: Torch not compiled with CUDA enabled', "Torch not compiled with CUDA enabled"),
        ("", "OSError: libcudart.so.11.0: cannot open shared object file: No such file or directory",
         "libcudart.so.11.0: cannot open shared object file"),
        ("", "2024-06-11 10:02:11.517 W tensorflow/stream_executor/platform/default/dso_loader.cc:64] Could not load "
             "dynamic library 'libcudnn.so.8'; dlerror: libcudnn.so.8: cannot open shared object file",
         "Could not load dynamic library 'libcudnn.so.8'"),
        ("", "RuntimeError: CUDA error: forward compatibility was attempted on non supported HW",
         "forward compatibility was attempted on non supported HW"),
    ],
    "requirements_install": [
        ("worker execution exit code 1", """\
Collecting clearml==2.0.1
Collecting clearml-agent==1.9.3
INFO: pip is looking at multiple versions of clearml to determine which version is compatible with other requirements. This could take a while.
ERROR: Cannot install clearml-agent==1.9.3 and clearml==2.0.1 because these package versions have conflicting dependencies.
The conflict is caused by:
    clearml 2.0.1 depends on requests>=2.32.0
    clearml-agent 1.9.3 depends on requests<=2.31.0 and >=2.20.0
ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/#dealing-with-dependency-conflicts
clearml_agent: ERROR: Could not install task requirements!""",
         "ERROR: ResolutionImpossible"),
        ("worker execution exit code 1", """\
Collecting torch==1.9.0+cu111
ERROR: Could not find a version that satisfies the requirement torch==1.9.0+cu111 (from versions: 2.0.0, 2.0.1, 2.1.0)
ERROR: No matching distribution found for torch==1.9.0+cu111""",
         "No matching distribution found for torch==1.9.0+cu111"),
        ("", """\
Building wheel for pycocotools (pyproject.toml): started
  error: subprocess-exited-with-error
  × Building wheel for pycocotools (pyproject.toml) did not run successfully.
  │ exit code: 1
      pycocotools/_mask.c:6:10: fatal error: Python.h: No such file or directory
  ERROR: Failed building wheel for pycocotools
ERROR: Failed to build installable wheels for some pyproject.toml based projects (pycocotools)""",
         "Failed building wheel for pycocotools"),
        ("", """\
Collecting package metadata (current_repodata.json): done
Solving environment: failed with initial frozen solve. Retrying with flexible solve.
PackagesNotFoundError: The following packages are not available from current channels:
  - cudatoolkit=11.1.74""",
         "PackagesNotFoundError"),
        ("", """\
Solving environment: failed
UnsatisfiableError: The following specifications were found to be incompatible with each other:
Output in format: Requested package -> Available versions""",
         "UnsatisfiableError"),
        ("", "LibMambaUnsatisfiableError: Encountered problems while solving:\n", "LibMambaUnsatisfiableError"),
        ("", "ResolvePackageNotFound:\n  - libgcc-ng==13.2.0=h807b86a_3", "ResolvePackageNotFound"),
        ("", "Solving environment: failed", "Solving environment: failed"),
        ("", "CondaHTTPError: HTTP 000 CONNECTION FAILED for url <https://conda.anaconda.org/pytorch/linux-64/"
             "current_repodata.json>",
         "CondaHTTPError"),
        ("", "ERROR: HTTP error 403 while getting https://pypi.acme.internal/packages/acme_utils-0.4.2-py3-none-any.whl",
         "HTTP error 403 while getting"),
        ("", "clearml_agent: ERROR: conda install of cudatoolkit=11.8 failed, see log above",
         "conda install of cudatoolkit=11.8 failed"),
        ("", "Error: virtualenv creation failed: [Errno 13] Permission denied: '/root/.clearml/venvs-builds/3.10'",
         "virtualenv creation failed"),
        ("", "ERROR: Could not install packages due to an OSError: [Errno 13] Permission denied: '/usr/lib/python3/dist-packages/requests'",
         "Could not install packages due to an OSError"),
    ],
    "git_diff": [
        ("worker execution exit code 1", """\
Applying uncommitted changes
error: patch failed: configs/train.yaml:12
error: configs/train.yaml: patch does not apply
clearml_agent: ERROR: Failed applying git diff:""",
         "Failed applying git diff"),
        ("", "error: corrupt patch at line 41", "corrupt patch at line 41"),
        ("", "clearml_agent: ERROR: git apply --unidiff-zero --reject failed", "git apply --unidiff-zero --reject failed"),
    ],
    "repository": [
        ("worker execution exit code 1", """\
cloning: https://github.com/acme-ml/perception.git
fatal: could not read Username for 'https://github.com': terminal prompts disabled
Repository cloning failed: Command '['clone', 'https://github.com/acme-ml/perception.git']' returned non-zero exit status 128.
clearml_agent: ERROR: Failed cloning repository.""",
         "fatal: could not read Username for 'https://github.com'"),
        ("", "git@github.com: Permission denied (publickey).", "Permission denied (publickey)"),
        ("", "fatal: repository 'https://gitlab.acme.internal/ml/old-project.git/' not found",
         "fatal: repository 'https://gitlab.acme.internal/ml/old-project.git/' not found"),
        ("", "fatal: reference is not a tree: 9c1e4b7a2d3f5e6a7b8c9d0e1f2a3b4c5d6e7f80", "reference is not a tree"),
        ("", "error: pathspec 'exp/anchors' did not match any file(s) known to git", "did not match any file(s) known to git"),
        ("", "fatal: couldn't find remote ref refs/heads/exp/anchors", "couldn't find remote ref"),
        ("", "clearml_agent: ERROR: failed cloning repository: exit code 128", "failed cloning repository"),
    ],
    "upload_too_large": [
        ("worker execution exit code 1", """\
2024-06-11 14:02:18,440 - clearml.storage - ERROR - Exception encountered while uploading HTTP Error 413: Request Entity Too Large
<html><head><title>413 Request Entity Too Large</title></head><body><center><h1>413 Request Entity Too Large</h1></center><hr><center>nginx/1.25.3</center></body></html>
ValueError: Upload failed""",
         "413 Request Entity Too Large"),
        ("", "requests.exceptions.HTTPError: 413 Client Error: Payload Too Large for url: https://files.ml.acme.io/",
         "413 Client Error: Payload Too Large"),
        ("", "2024-06-11 14:05:01,003 - clearml.storage - ERROR - Failed uploading: status code 413",
         "status code 413"),
    ],
    "storage_credentials": [
        ("worker execution exit code 1", """\
2024-06-11 08:41:17,302 - clearml.storage - ERROR - Could not get access credentials for 's3://ml-artifacts/perception/' , check configuration file ~/clearml.conf
botocore.exceptions.NoCredentialsError: Unable to locate credentials""",
         "Unable to locate credentials"),
        ("", "botocore.exceptions.ClientError: An error occurred (InvalidAccessKeyId) when calling the PutObject "
             "operation: The AWS Access Key Id you provided does not exist in our records.",
         "InvalidAccessKeyId"),
        ("", "botocore.exceptions.ClientError: An error occurred (SignatureDoesNotMatch) when calling the PutObject "
             "operation: The request signature we calculated does not match the signature you provided.",
         "SignatureDoesNotMatch"),
        ("", "botocore.exceptions.ClientError: An error occurred (ExpiredToken) when calling the PutObject operation: "
             "The provided token has expired.",
         "ExpiredToken"),
        ("", "botocore.exceptions.ClientError: An error occurred (InvalidClientTokenId) when calling the "
             "GetCallerIdentity operation: The security token included in the request is invalid.",
         "InvalidClientTokenId"),
        ("", "google.auth.exceptions.DefaultCredentialsError: Your default credentials were not found.",
         "DefaultCredentialsError"),
        ("", "azure.core.exceptions.ClientAuthenticationError: Server failed to authenticate the request. Make sure "
             "the value of Authorization header is formed correctly including the signature. ErrorCode:AuthenticationFailed",
         "Server failed to authenticate the request"),
    ],
    "missing_module": [
        ("worker execution exit code 1", """\
Starting Task Execution:
Traceback (most recent call last):
  File "/root/.clearml/venvs-builds/3.10/task_repository/speech.git/train_asr.py", line 9, in <module>
    import evaluate
ModuleNotFoundError: No module named 'evaluate'""",
         "ModuleNotFoundError: No module named 'evaluate'"),
        ("", "ImportError: cannot import name 'cached_download' from 'huggingface_hub'", "ImportError: cannot import name"),
        ("", "ImportError: libGL.so.1: cannot open shared object file: No such file or directory",
         "ImportError: libGL.so.1: cannot open shared object file"),
        ("", "ImportError: No module named yaml", "ImportError: No module named yaml"),
    ],
    "cuda_oom": [
        ("worker execution exit code 1", """\
Epoch 0:   3%|3         | 12/372 [00:21<10:41]
Traceback (most recent call last):
  File "train_seg.py", line 211, in <module>
    loss.backward()
torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.65 GiB total capacity; 21.09 GiB already allocated; 1.12 GiB free; 21.48 GiB reserved in total by PyTorch)""",
         "CUDA out of memory. Tried to allocate 2.00 GiB"),
        ("", "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
         "CUBLAS_STATUS_ALLOC_FAILED"),
        ("", "tensorflow.python.framework.errors_impl.ResourceExhaustedError: OOM when allocating tensor with "
             "shape[64,1024,1024] and type float on /job:localhost/replica:0/task:0/device:GPU:0",
         "OOM when allocating tensor"),
        ("", "jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
             "17179869184 bytes. (OOM)",
         "RESOURCE_EXHAUSTED"),
        ("", "cudaErrorMemoryAllocation: out of memory", "cudaErrorMemoryAllocation"),
        ("", "torch.OutOfMemoryError: HIP out of memory. Tried to allocate 1.50 GiB (GPU 0; 63.98 GiB total capacity)",
         "HIP out of memory"),
    ],
    "storage": [
        ("worker execution exit code 1", """\
Saving model checkpoint runs/train/weights/best.pt
2024-06-11 03:12:44,118 - clearml.storage - ERROR - Exception encountered while uploading Could not connect to the endpoint URL: "http://minio.acme.internal:9000/ml-artifacts/perception/best.pt"
ValueError: Upload failed""",
         "Could not connect to the endpoint URL"),
        ("", "ValueError: Insufficient permissions (write failed) for s3://ml-artifacts-prod/exports/resnet50",
         "Insufficient permissions (write failed)"),
    ],
    "shared_memory": [
        ("worker execution exit code 1", """\
ERROR: Unexpected bus error encountered in worker. This might be caused by insufficient shared memory (shm).
Traceback (most recent call last):
RuntimeError: DataLoader worker (pid 412) is killed by signal: Bus error. It is possible that dataloader's workers are out of shared memory. Please try to raise your shared memory limit.""",
         "insufficient shared memory (shm)"),
        ("", "RuntimeError: DataLoader worker (pid(s) 2211, 2212) exited unexpectedly: bus error, shm too small",
         "DataLoader worker (pid(s) 2211, 2212) exited unexpectedly"),
    ],
    "host_oom": [
        ("worker execution exit code -9", """\
Loading corpus shards: 12 files
[  812.449021] Out of memory: Killed process 28114 (python) total-vm:96512000kB, anon-rss:63212108kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:124416kB oom_score_adj:0
Killed""",
         "Out of memory: Killed process 28114 (python)"),
        ("", "Last State: Terminated  Reason: OOMKilled  Exit Code: 137", "OOMKilled"),
        ("", """\
Traceback (most recent call last):
  File "preprocess.py", line 88, in <module>
    frame = pd.concat(parts)
MemoryError""",
         "MemoryError"),
        ("", "terminate called after throwing an instance of 'std::bad_alloc'", "std::bad_alloc"),
        ("", "OSError: [Errno 12] Cannot allocate memory", "Cannot allocate memory"),
        ("", "numpy.core._exceptions._ArrayMemoryError: Unable to allocate 74.5 GiB for an array with shape "
             "(100000, 100000) and data type float64",
         "Unable to allocate 74.5 GiB for an array"),
        ("", "RuntimeError: DataLoader worker (pid 30112) is killed by signal: Killed.",
         "DataLoader worker (pid 30112) is killed by signal: Killed"),
        ("", "[ 1203.009911] python invoked oom-killer: gfp_mask=0x100cca(GFP_HIGHUSER_MOVABLE), order=0, oom_score_adj=0",
         "oom-kill"),
        ("", "[ 1203.011201] oom_reaper: reaped process 4117 (python), now anon-rss:0kB", "oom_reaper"),
    ],
    "watchdog_stop": [
        ("Forced stop (non-responsive)", """\
Generating SHA2 hash for 1136604 files
Hash generation completed
Uploading dataset files: {'show_progress': True, 'verbose': False, 'output_url': None, 'compression': None}""",
         "Forced stop (non-responsive)"),
    ],
    "spot_preemption": [
        ("worker execution exit code -15", """\
step 48100 | loss 2.907 | lr 4.8e-04
2024-06-11 02:14:55,001 - clearml.autoscaler - WARNING - Spot instance interruption notice received for i-0abc12de34f567890, terminating in 2 minutes
Terminated""",
         "Spot instance interruption notice"),
        ("", 'curl http://169.254.169.254/latest/meta-data/spot/instance-action -> {"action": "terminate", '
             '"time": "2024-06-11T02:16:55Z"}',
         "instance-action"),
        ("", "Instance was preempted (GCE preemptible VM stopped by Compute Engine)", "Instance was preempted"),
        ("", "Node gke-gpu-pool-7f3a is shutting down, evicting pod clearml-id-4f2c9e (GracefulNodeShutdown)",
         "GracefulNodeShutdown"),
        ("", "clearml_agent: WARNING: instance terminated by the cloud provider, worker going down",
         "instance terminated by the cloud provider"),
    ],
    "agent_killed": [
        ("worker execution exit code -9", """\
step 48000 | loss 2.913 | lr 4.8e-04
step 48100 | loss 2.907 | lr 4.8e-04
Killed""",
         "worker execution exit code -9"),
        ("", "Process 2211 received signal 15, shutting down", "received signal 15"),
        ("", "clearml-agent daemon shutting down, stopping the running task", "clearml-agent daemon shutting down"),
        ("", "Terminated", "Terminated"),
    ],
    "user_code": [
        ("worker execution exit code 1", """\
Loading corpus shards: 12 files
Traceback (most recent call last):
  File "bpe_sweep.py", line 54, in <module>
    vocab = merges[cfg.vocab_size]
KeyError: 32000""",
         "KeyError: 32000"),
    ],
}

# Lines of healthy runs that no cause may claim (a pull that succeeded, a slow but working resolver, nvidia-smi).
HEALTHY_LINES = """\
Unable to find image 'nvidia/cuda:12.1.1-runtime-ubuntu22.04' locally
12.1.1-runtime-ubuntu22.04: Pulling from nvidia/cuda
Status: Downloaded newer image for nvidia/cuda:12.1.1-runtime-ubuntu22.04
INFO: pip is looking at multiple versions of torchvision to determine which version is compatible with other requirements. This could take a while.
Requirement already satisfied: numpy==1.26.4 in /root/.clearml/venvs-builds/3.10/lib/python3.10/site-packages (1.26.4)
Successfully installed clearml-1.16.2 torch-2.3.0 torchvision-0.18.0
| NVIDIA-SMI 535.104.05             Driver Version: 535.104.05   CUDA Version: 12.2     |
|   0  NVIDIA A10G                    On  | 00000000:00:1E.0 Off |                    0 |
torch.cuda.is_available(): True, device: NVIDIA A10G (sm_86)
Environment setup completed successfully
Starting Task Execution:
Epoch 3/100: 100%|##########| 412/412 [02:31<00:00, loss=0.413, mem=18.2G]
2024-06-11 03:12:44,118 - clearml.Task - INFO - Completed model upload to s3://ml-artifacts/perception/best.pt
Uploading dataset changes (98 files compressed to 94.76 MiB) to s3://ml-datasets/perception
Saving checkpoint to /mnt/ckpt/epoch-3.pt (disk usage 41%)
DataLoader: 8 workers, pin_memory=True, persistent_workers=True
Collecting package metadata (current_repodata.json): done
Solving environment: done""".splitlines()


CASES = [(cause, *case) for cause, cases in EXCERPTS.items() for case in cases]


@pytest.mark.parametrize(("cause", "reason", "excerpt", "evidence"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_excerpt_is_classified_with_its_evidence_line(cause: str, reason: str, excerpt: str, evidence: str) -> None:
    got, hits = classify_failure(excerpt.splitlines(), reason, "")
    assert got == cause, f"expected {cause}, got {got} from {hits}"
    assert any(evidence in hit for hit in hits), f"{evidence!r} not among the evidence lines {hits}"


def test_every_pattern_matches_some_excerpt_line() -> None:
    lines = [line for _, reason, excerpt, _ in CASES for line in [reason, *excerpt.splitlines()] if line]
    dead = [f"{c.id}: {p.pattern}" for c in CAUSES for p in c.patterns if not any(p.search(line) for line in lines)]
    assert dead == []


def test_every_cause_has_excerpts_and_healthy_lines_match_nothing() -> None:
    assert set(EXCERPTS) == set(CAUSE_IDS) - {"unknown"}
    claimed = {line: cause.id for line in HEALTHY_LINES for cause in CAUSES
               if any(p.search(line) for p in cause.patterns)}
    assert claimed == {}
    assert classify_failure(HEALTHY_LINES) == ("unknown", [])


def test_catalogue_contract() -> None:
    assert set(typing.get_args(CauseName)) == set(CAUSE_IDS)  # the `severities` parameter accepts exactly the ids
    by_id = {c.id: c for c in CAUSES}
    # the buttons that fit: a different image or requirements -> clone; a different/healthier host -> requeue
    assert by_id["image_pull"].actions == ["clone", "requeue"] and by_id["cuda_mismatch"].actions == ["clone", "requeue"]
    assert by_id["gpu_not_visible"].actions == ["requeue"] and by_id["spot_preemption"].actions == ["requeue"]
    assert all(c.remediation and "  " not in c.remediation for c in CAUSES)
    assert by_id["watchdog_stop"].sources == ["https://github.com/clearml/clearml/issues/1064"]


def test_a_broken_catalogue_fails_loudly(tmp_path: Path) -> None:
    bad = tmp_path / "causes.yaml"
    bad.write_text("causes:\n  - {id: oops, title: t, patterns: ['(unclosed'], remediation: r}\n"
                   "  - {id: unknown, title: u, remediation: r}\n")
    with pytest.raises(ValueError, match="cause oops"):
        load_causes(bad)
    bad.write_text("causes:\n  - {id: a, title: t, remediation: r, actions: [explode]}\n")
    with pytest.raises(ValueError, match="cause a"):
        load_causes(bad)
