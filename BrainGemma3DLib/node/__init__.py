"""The AI node beside the PACS (``braingemma3d serve``): a DICOM listener and an HTTP API in front of a job
queue (Celery on Redis) whose model-holding workers draft studies as they arrive; drafts go back to the PACS
as UNVERIFIED results, and reading stations without a GPU use it from the Slicer panel. See docs/node.md."""
