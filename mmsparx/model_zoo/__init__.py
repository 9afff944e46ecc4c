"""The model zoo: what each config should reach (its family's metafile)
and what it is (whole-model parameters and FLOPs, counted as the papers
count), for ``tools/analysis_tools/model_zoo.py`` and the family READMEs."""
