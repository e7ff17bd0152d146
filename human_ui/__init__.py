"""The clip-comparison labeling web app (server and static page); it depends on the dataset
store only.

- ``human_ui.server.serve(dataset, UIConfig(...))`` runs it (``embodied-pref label --ui``);
  ``create_app`` builds the FastAPI app, ``BackgroundServer`` runs one on a thread.
- ``human_ui.annotators.add_annotator(dataset, name)`` registers a person and prints their link.
- ``human_ui.config.UIConfig``: host, port, pair/triplet mode, uniform/disagreement selection,
  background retraining, overlap share, request limits.
- ``human_ui.demo.build_demo_dataset(dir)``: a small synthetic dataset to try it on.
"""
