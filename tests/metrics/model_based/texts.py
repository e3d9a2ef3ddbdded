"""Report pairs and a tokenizer corpus shared by the model-based metric tests."""

CORPUS = [
    "the lungs are clear", "no pleural effusion or pneumothorax", "heart size is normal",
    "mild cardiomegaly with pulmonary edema", "there is a small left pleural effusion",
    "no acute cardiopulmonary process", "support devices in place", "fracture of the left rib",
    "bibasilar atelectasis", "the cardiomediastinal silhouette is within normal limits",
    "possible right lower lobe consolidation", "stable appearance of the chest",
] * 3

PREDICTIONS = [
    "the lungs are clear. no pleural effusion.",
    "mild cardiomegaly with pulmonary edema",
    "",
    "there is a small left pleural effusion and bibasilar atelectasis",
    "no acute cardiopulmonary process",
    "possible consolidation. support devices in place.",
    "heart size is normal",
    "fracture of the rib",
    "the lungs are clear. no pleural effusion.",
]
REFERENCES = [
    "the lungs are clear",
    "moderate cardiomegaly. pulmonary edema is present.",
    "no pneumothorax",
    "small left pleural effusion",
    "no acute cardiopulmonary process",
    "right lower lobe consolidation. lines in place.",
    "heart size is normal.\n\nno effusion",
    "stable appearance of the chest",
    "the lungs are clear",
]
