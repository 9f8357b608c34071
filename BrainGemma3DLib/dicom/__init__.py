"""DICOM results: a report leaves as first-class DICOM objects (SR, SEG, Encapsulated PDF) and travels to and
from a PACS (DIMSE and DICOMweb). See ``docs/design.md`` ("DICOM and PACS")."""
