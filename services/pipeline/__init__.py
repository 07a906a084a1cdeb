"""smf.pipeline: one command from a folder of sounds to a playable synth (`smf pipeline run`), its HTML report and
its resumable, content-addressed stages. See pipeline.py."""
