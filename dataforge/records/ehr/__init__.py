"""EHR readers (FHIR R4, Synthea CSV, MIMIC-IV, OMOP CDM), validation, units and de-identification."""
