"""stealbench: a harness for defenses against model-stealing attacks."""
import warnings

__version__ = "0.1.0"

# A process's first torch.func.jvp (InI, GRAD², the speed floor) loads torch's jvp
# decompositions, which call torch's own deprecated torch.jit.script: one FutureWarning per
# run worker, from inside torch, that a user can do nothing about.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                        category=FutureWarning, module=r"torch\.")
