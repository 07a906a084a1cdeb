"""Datasets: the built-in sets (synthetic pops, tones, wind; soundfont notes rendered by fluidsynth) and importing a
folder of the user's sounds.

    from smf.datasets import make_dataset, import_dataset, list_dataset_files
    aid = make_dataset("tones", store)                          # -> "datasets/tones"
    aid = import_dataset("~/sounds", store, name="mine", sample_rate=16000)
    pairs = list_dataset_files(store, aid)                      # [(wav_key, params_key | None), ...]

A dataset is the store artifact `datasets/<name>/`: `<stem>.wav` (16-bit PCM mono) + `<stem>.params` + manifest.
"""

from smf.datasets.files import dataset_id, list_dataset_files, make_dataset
from smf.datasets.generators import DEFAULTS, GENERATORS, Clip, generate, tone_f0
from smf.datasets.importer import (
    MONO_POLICIES,
    ON_BAD_FILE,
    FolderSurvey,
    find_audio,
    import_dataset,
    survey_folder,
)

__all__ = [
    "DEFAULTS",
    "GENERATORS",
    "MONO_POLICIES",
    "ON_BAD_FILE",
    "Clip",
    "FolderSurvey",
    "dataset_id",
    "find_audio",
    "generate",
    "import_dataset",
    "list_dataset_files",
    "make_dataset",
    "survey_folder",
    "tone_f0",
]
