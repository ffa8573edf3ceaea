"""Dataset constants that several modules share (single source of truth, no logic)."""

# CT-RATE multi_abnormality_labels column order (REFERENCE.md section 1).
CT_RATE_LABELS: tuple[str, ...] = (
    "Medical material",
    "Arterial wall calcification",
    "Cardiomegaly",
    "Pericardial effusion",
    "Coronary artery wall calcification",
    "Hiatal hernia",
    "Lymphadenopathy",
    "Emphysema",
    "Atelectasis",
    "Lung nodule",
    "Lung opacity",
    "Pulmonary fibrotic sequela",
    "Pleural effusion",
    "Mosaic attenuation pattern",
    "Peribronchial thickening",
    "Consolidation",
    "Bronchiectasis",
    "Interlobular septal thickening",
)

# AbdomenAtlas 3.0 lesion labels (RadGPT rule on the masks; Table 3 of the paper).
ABDOMEN_LESION_LABELS: tuple[str, ...] = ("liver_lesion", "kidney_lesion", "pancreatic_lesion")

# ReXGroundingCT finding categories: code -> name.
REXGROUNDING_CATEGORIES: dict[str, str] = {
    "1a": "bronchial_wall_thickening",
    "1b": "bronchiectasis",
    "1c": "emphysema",
    "1d": "septal_thickening",
    "1e": "micronodules",
    "1f": "other_non_focal",
    "2a": "linear_abnormalities",
    "2b": "atelectasis_consolidation",
    "2c": "groundglass_opacity",
    "2d": "pulmonary_nodules_masses",
    "2e": "pleural_effusion_thickening",
    "2f": "honeycombing",
    "2g": "pneumothorax",
    "2h": "other_focal",
}

# The literal text CT-RATE stores in empty report fields.
NOT_GIVEN = "Not given."
