"""Hand-written report sentences with the labels mrg's CheXpert-style labeler must give, one group per rule family.

All sentences were written for these tests (no real report text). Each case is
``(report, expected labels)``; the expected dict is the complete output of ``label_report``: observations
that are not keys must be blank.
"""

from __future__ import annotations

NF, EC, CM, LL, LO = "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity"
ED, CO, PN, AT, PX = "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax"
PE, PO, FR, SD = "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"

# family name -> cases
CASES: dict[str, list[tuple[str, dict[str, float]]]] = {
    "positive mentions": [
        ("Mild cardiomegaly.", {CM: 1.0}),
        ("Small left pleural effusion.", {PE: 1.0}),
        ("Large right pneumothorax.", {PX: 1.0}),
        ("Patchy opacity at the right base.", {LO: 1.0}),
        ("Multiple bilateral rib fractures.", {FR: 1.0}),
        ("Right PICC line with its tip in the SVC.", {NF: 1.0, SD: 1.0}),
        ("The heart is enlarged.", {CM: 1.0}),
        ("Heart is enlarged.", {CM: 1.0}),
        ("Widened mediastinum.", {EC: 1.0}),
        ("Left lower lobe consolidation.", {CO: 1.0}),
        ("Right middle lobe pneumonia.", {PN: 1.0}),
        ("Bibasilar atelectatic changes.", {AT: 1.0}),
        ("A 2 cm nodule in the left upper lobe.", {LL: 1.0}),
        ("Interstitial pulmonary edema.", {ED: 1.0}),
        ("Right apical pleural thickening.", {PO: 1.0}),
        ("Small right hydropneumothorax.", {PX: 1.0}),
    ],
    "unmentions": [
        ("Small pericardial effusion.", {NF: 1.0}),
        ("Calcified nodule in the right upper lobe.", {}),  # "calcified" blocks No Finding, nodule unmentioned
        ("A granuloma projects over the heart.", {}),
        ("Nipple shadow in the left cardiac silhouette.", {NF: 1.0}),
        ("Platelike atelectasis at the left base.", {AT: 1.0}),
        ("Massive hiatal hernia.", {}),
        ("The lateral screw of the fixation hardware is fractured.", {NF: 1.0, SD: 1.0}),
        ("Soft tissue edema of the chest wall.", {NF: 1.0}),
    ],
    "pre-negation uncertainty": [
        ("Cannot exclude a small left pleural effusion.", {PE: -1.0}),
        ("Pneumonia cannot be excluded.", {PN: -1.0}),
        ("A small pneumothorax is not excluded.", {PX: -1.0}),
        ("No new consolidation.", {CO: -1.0}),
        ("No new focal opacity or effusion.", {LO: -1.0, PE: -1.0}),
        ("Difficult to exclude atelectasis.", {AT: -1.0}),
    ],
    "negation": [
        ("No pleural effusion.", {NF: 1.0, PE: 0.0}),
        ("No pleural effusion or pneumothorax.", {NF: 1.0, PX: 0.0, PE: 0.0}),
        ("No evidence of pneumothorax, pleural effusion, or focal consolidation.", {NF: 1.0, CO: 0.0, PX: 0.0, PE: 0.0}),
        ("The lungs are clear without consolidation or edema.", {NF: 1.0, ED: 0.0, CO: 0.0}),
        ("Negative for pneumothorax.", {NF: 1.0, PX: 0.0}),
        ("The lungs are free of focal airspace disease.", {NF: 1.0, LO: 0.0}),
        ("Heart size is normal.", {NF: 1.0, CM: 0.0}),
        ("Normal heart size.", {NF: 1.0, CM: 0.0}),
        ("The heart is normal in size.", {NF: 1.0, CM: 0.0}),
        ("The heart is not enlarged.", {NF: 1.0, CM: 0.0}),
        ("Heart size and pulmonary vascularity are within normal limits.", {NF: 1.0, CM: 0.0}),
        ("The cardiomediastinal silhouette is within normal limits for size and contour.", {NF: 1.0, EC: 0.0}),
        ("Heart and mediastinum of normal size and contour.", {NF: 1.0, EC: 0.0}),  # "heart" alone is no mention
        ("Normal size and configuration of the cardiac silhouette.", {NF: 1.0, CM: 0.0}),
        ("The left pleural effusion has resolved.", {NF: 1.0, PE: 0.0}),
        ("Interval resolution of the right lower lobe pneumonia.", {NF: 1.0, PN: 0.0}),
        ("The chest tube has been removed.", {NF: 1.0, SD: 0.0}),
        ("Scarring rather than pneumonia.", {LO: 1.0, PN: 0.0}),
        ("There is no pleural line to suggest a pneumothorax.", {NF: 1.0, PX: 0.0}),
        ("The previously seen nodule is no longer seen.", {NF: 1.0, LL: 0.0}),
        ("A pneumothorax is not seen.", {NF: 1.0, PX: 0.0}),
        ("No definite consolidation.", {NF: 1.0, CO: 0.0}),  # "no definite" is a negation rule in CheXpert
        ("No emphysema.", {NF: 1.0}),
        ("Impression: no acute disease, mild cardiomegaly.", {NF: 1.0, CM: 0.0}),  # NegBio's section rule
    ],
    "post-negation uncertainty": [
        ("Opacity at the left base which may represent atelectasis.", {LO: 1.0, AT: -1.0}),
        ("Possible small right pleural effusion.", {PE: -1.0}),
        ("Pneumonia is suspected.", {PN: -1.0}),
        ("Left basilar atelectasis versus pneumonia.", {PN: -1.0, AT: -1.0}),
        ("Scarring or atelectasis at the left base.", {LO: -1.0, AT: -1.0}),
        ("Scarring/atelectasis at the left base.", {LO: -1.0, AT: -1.0}),  # a/b is cleaned to "a or b"
        ("Opacity concerning for pneumonia.", {LO: 1.0, PN: -1.0}),
        ("Findings suggestive of mild edema.", {ED: -1.0}),
        ("Differential diagnosis includes pneumonia.", {PN: -1.0}),
        ("Borderline heart size.", {CM: -1.0}),
        ("Stable cardiomediastinal silhouette.", {EC: -1.0}),
        ("No change in heart size.", {CM: -1.0}),
        ("Pulmonary vascular congestion.", {ED: -1.0}),
        ("The left costophrenic angle is obscured, which could be a small effusion.", {PE: -1.0}),
        ("Evaluation for pneumothorax is limited by rotation.", {PX: -1.0}),
    ],
    "scope limits": [
        ("No pleural effusion. The heart is enlarged.", {CM: 1.0, PE: 0.0}),
        ("No pneumothorax, but there is a small left effusion.", {PX: 0.0, PE: 1.0}),
        ("The heart is mildly enlarged and the lungs are normal.", {CM: 1.0}),
        ("Cardiomegaly with normal pulmonary vascularity.", {CM: 1.0}),
        ("Cardiomegaly, aortic ectasia or tortuosity.", {CM: 1.0}),  # "or" does not reach across the comma
        ("Stable cardiomegaly.", {CM: 1.0}),  # "stable" hedges a silhouette, not a stated enlargement
        ("Borderline cardiomegaly.", {CM: 1.0}),  # CheXpert's rule is "borderline heart size" only
        ("Opacity in the left lower lobe, likely atelectasis.", {LO: 1.0, AT: 1.0}),
        ("The heart size is normal lungs are clear.", {NF: 1.0, CM: 0.0}),
    ],
    "aggregation": [
        # several mentions of one observation: {0, 1} -> 1
        ("No right pleural effusion. Small left pleural effusion.", {PE: 1.0}),
        # {0, -1} -> -1
        ("No right pleural effusion. Possible small left pleural effusion.", {PE: -1.0}),
        # {-1, 1} -> 1
        ("Possible right pleural effusion. Small left pleural effusion.", {PE: 1.0}),
        # {0, -1, 1} -> -1: the original's order checks {0, -1} first
        ("No right effusion. Possible left effusion. Small effusion at the base.", {PE: -1.0}),
        # heart failure / CHF add an uncertain Cardiomegaly mention unless negated
        ("Findings consistent with congestive heart failure.", {CM: -1.0, ED: 1.0}),
        ("Mild edema, possible CHF.", {CM: -1.0, ED: 1.0}),
        ("No evidence of heart failure.", {NF: 1.0, ED: 0.0}),
        ("Known CHF. Cardiomegaly.", {CM: 1.0, ED: 1.0}),  # {-1, 1} -> 1
        # No Finding: blocked by positive or uncertain findings (other-finding stems too), never by devices
        ("Emphysema.", {}),
        ("Mild degenerative changes of the thoracic spine.", {}),
        ("Possible small nodule.", {LL: -1.0}),
        ("Endotracheal tube 4 cm above the carina.", {NF: 1.0, SD: 1.0}),
        ("The lungs are clear.", {NF: 1.0}),
        ("", {NF: 1.0}),
    ],
    # Phrasings that labeler 1.0 missed on real IU X-ray reports (found on the odd-numbered half; the sentences
    # here are written for the tests). Each is a lexicon or cue gap fixed in 1.1.
    "IU X-ray phrasings (1.1)": [
        # pneumonitis is filed under pneumonia (MeSH and radiologists); uncertainty still applies
        ("Patchy right lower lobe opacity consistent with pneumonitis.", {LO: 1.0, PN: 1.0}),
        ("Possible pneumonitis in the left base.", {PN: -1.0}),
        # "heart enlargement" as well as "cardiac enlargement"
        ("Stable mild heart enlargement.", {CM: 1.0}),
        # "unchanged" after a stated enlargement does not hedge it; before it, it still does (CheXpert's amod rule)
        ("The cardiac silhouette is mildly enlarged, unchanged.", {CM: 1.0}),
        ("Stable enlarged cardiac contour.", {EC: -1.0, CM: 1.0}),
        # "normal in ..." negates its subject and what follows
        ("Heart size normal in LV contour.", {NF: 1.0, EC: 0.0, CM: 0.0}),
        # where the heart is, not how big it is
        ("Leftward shift of the heart and mediastinum.", {}),
        ("No mediastinal shift.", {NF: 1.0}),
        # a lumpectomy is not a lump
        ("Prior right lumpectomy.", {NF: 1.0}),
        # "not well-seen" with a hyphen is uncertain like "not well seen"
        ("The previously seen nodule is not well-seen on this study.", {LL: -1.0}),
        ("The left effusion is not well-visualized.", {PE: -1.0}),
        # "normal size ... of the X" is about X, not about the subject of the verb before it
        ("Monitor leads show normal size and configuration of the cardiac silhouette.", {NF: 1.0, CM: 0.0, SD: 1.0}),
        ("The heart shows normal size and contour.", {NF: 1.0, EC: 0.0, CM: 0.0}),
        # interstitial and suture lines are not support devices
        ("Scattered B-lines at the lung bases.", {NF: 1.0}),
        ("Sternal suture lines are intact.", {NF: 1.0}),
        # devices whose usual name is missing: bone anchors, prostheses, a generator whose "pacemaker" was redacted
        ("Right humeral head bone anchors.", {NF: 1.0, SD: 1.0}),
        ("Cardiac XXXX generator in the left chest wall.", {NF: 1.0, SD: 1.0}),
        ("Prosthetic right humeral head.", {NF: 1.0, SD: 1.0}),
        ("Bilateral breast prostheses.", {NF: 1.0}),
        # the fissures are pleura
        ("Mild thickening of the minor fissure.", {PO: 1.0}),
        ("Fissural thickening on the right.", {PO: 1.0}),
        # cystic fibrosis is not pleural fibrosis
        ("Changes of cystic fibrosis.", {NF: 1.0}),
        # hedges: adverbs inside "cannot exclude", "difficult to exclude" after its subject, maybe, perhaps,
        # possibility of, questioned, suggest, in the differential
        ("Pulmonary edema is difficult to entirely exclude.", {ED: -1.0}),
        ("Atelectasis is present, difficult to exclude pneumonia.", {PN: -1.0, AT: 1.0}),
        ("Pneumonia cannot be confidently excluded.", {PN: -1.0}),
        ("Cannot reliably exclude a small effusion.", {PE: -1.0}),
        ("Rib deformity, perhaps due to old fractures.", {FR: -1.0}),
        ("Maybe due to pulmonary edema.", {ED: -1.0}),
        ("Possibility of a small pneumothorax.", {PX: -1.0}),
        ("Pneumonia is in the differential.", {PN: -1.0}),
        ("Questioned small left effusion.", {PE: -1.0}),
        ("Findings suggest a combination of consolidation and atelectasis.", {CO: -1.0, AT: -1.0}),
        ("There is no focal opacity to suggest pneumonia.", {NF: 1.0, LO: 0.0, PN: 0.0}),  # still a negation
        # CheXpert's unanchored "scolio" matched these; mrg's word-anchored stem had lost them
        ("Mild thoracolumbar dextroscoliosis.", {}),
        ("Levoscoliosis of the lumbar spine.", {}),
        # "opaque" as well as "opacity"
        ("The right lower lobe is opaque.", {LO: 1.0}),
    ],
    # What stays as CheXpert defines it although MeSH indexes it otherwise (docs/labeler.md, "Remaining
    # disagreements"): hedged findings are -1, nodular opacities are lesions, calcified nodules are not.
    "CheXpert conventions kept": [
        ("Bilateral effusions and/or atelectasis.", {AT: -1.0, PE: -1.0}),
        ("Minimal scarring or atelectasis at the left base.", {LO: -1.0, AT: -1.0}),
        ("Small effusion versus pleural thickening.", {PE: -1.0, PO: -1.0}),
        ("Probable small residual effusion.", {PE: -1.0}),
        ("Borderline heart size.", {CM: -1.0}),
        ("Nodular opacity in the left upper lobe.", {LL: 1.0, LO: 1.0}),
        ("Calcified nodules from old granulomatous disease.", {}),
        ("Opacity consistent with infection.", {LO: 1.0, PN: 1.0}),
        # list constructions: one negation reaches every item
        ("No pneumothorax, pleural effusion, or focal airspace disease.", {NF: 1.0, LO: 0.0, PX: 0.0, PE: 0.0}),
        ("Lungs are clear without focal consolidation, effusion, or pneumothorax.",
         {NF: 1.0, CO: 0.0, PX: 0.0, PE: 0.0}),
        ("No focal consolidation, suspicious pulmonary nodule, pneumothorax, or pleural effusion.",
         {NF: 1.0, LL: 0.0, CO: 0.0, PX: 0.0, PE: 0.0}),
        ("Cardiomegaly without pulmonary edema.", {CM: 1.0, ED: 0.0}),
    ],
}

ALL_CASES = [(family, report, expected) for family, cases in CASES.items() for report, expected in cases]
