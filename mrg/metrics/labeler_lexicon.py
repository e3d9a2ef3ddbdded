"""The phrase tables of mrg's CheXpert-style labeler: mentions, unmentions, cues and scope barriers.

Everything here is data; the matching logic lives in :mod:`mrg.metrics.labeler`. Phrases are regular
expression fragments matched against the CheXpert-cleaned, lower-cased text (see
``labeler.clean_report``). Conventions:

* A fragment that starts with ``\\b`` must start at a word boundary; one that ends without ``\\b`` is a
  *stem* and matches any continuation, as the CheXpert labeler's unanchored phrases do
  (``atelecta`` matches "atelectasis" and "atelectatic"). mrg adds a leading word boundary to almost
  every phrase (CheXpert's ``edema`` also matches "oedema" and "myxedema"; its ``mass`` matched
  "massive" and needed an unmention for it). Each deviation from CheXpert's phrase set is marked
  ``# mrg:`` with the reason.
* The observation names are those of :data:`mrg.data.chexpert.OBSERVATIONS`. Mentions listed under
  ``No Finding`` are CheXpert's "other finding" stems: they never produce a label of their own, but a
  positive or uncertain one blocks No Finding.

Changing anything in this file changes labels: bump ``LABELER_VERSION`` in :mod:`mrg.metrics.labeler`.
"""

from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------------
# Mentions: which words name an observation.
# ---------------------------------------------------------------------------------------------------

MENTIONS: dict[str, tuple[str, ...]] = {
    # CheXpert's 53 "other finding" stems (abridged into stems that cover the same words), plus the
    # mrg additions marked below: findings that MeSH indexes as abnormal and CheXpert's list misses.
    "No Finding": (
        r"\bemphysem",
        r"\bblunt",
        r"\bdensit(?:y|ies)\b",
        r"\belevat(?:ion|ed)\b",
        r"\beventrat",
        r"\b(?:dextro|levo)?scolio",  # CheXpert's unanchored "scolio" also matched dextro- / levoscoliosis
        r"\bdegenera",
        r"\bcalcifi",
        r"\bhyperinflat",
        r"\bbronchospasm",
        r"\basthma",
        r"\bhernia",
        r"\bcopd\b",
        r"\binterstitial markings?\b",
        r"\bplaque",
        r"\bosteophyt",  # CheXpert: osteophytosis; mrg: also "osteophytes"
        r"\baortic disease",
        r"\bbronchiolitis",
        r"\bairways? disease",
        r"\bthickening",
        r"\bcephalization",
        r"\baspiration",
        r"\bbulla(?:e|ous)?\b",
        r"\bcontusion",
        r"\batheroscl",
        r"\bosteopeni",
        r"\bmetasta",
        r"\bgranulom",
        r"\bpneumomediastinum",
        r"\bpneumoperitoneum",
        r"\bosteodystrophy",
        r"\bcuffing",
        r"\birregular lucency",
        r"\binflam",
        r"\bfissure",
        r"\bhypertension",
        r"\bprominen",
        r"\bkyphos",
        r"\bkyphotic",
        r"\bdefib",
        r"\bhyperexpan",
        r"\bbullet",
        r"\breticula",
        r"\bthoracentesis",
        r"\bbronchitis",
        r"\bvolume loss",
        r"\bdeformit",
        r"\bhemorrhag",
        r"\bhematoma",
        r"\bradiopaque",
        r"\baerophagia",
        r"\barthropathy",
        r"\btracheostomy",
        # mrg additions: abnormalities that CheXpert's list misses.
        r"\btortu",  # tortuous / tortuosity (of the aorta)
        r"\bectatic\b",
        r"\bectasia\b",
        r"\bhyperlucen",
        r"\bhypoinflat",
        r"\bhypoexpan",
        r"\blow (?:lung )?volumes?\b",
        r"\bspondylo",
        r"\bosteoarthriti",
        r"\bcicatri",
        r"\bhyperaerat",
        r"\bflattening of the (?:hemi)?diaphragms?\b",
        r"\bflattened (?:hemi)?diaphragms?\b",
        r"\bbronchiectasis",
        r"\blymphadenopathy\b",
        r"\badenopathy\b",
        r"\bsclero",
        r"\bcavit(?:y|ies|ary|ation)\b",
        r"\bshift(?:ed)?\b",  # mediastinal or tracheal shift (no longer a cardiomediastinal mention, see UNMENTIONS)
    ),
    "Enlarged Cardiomediastinum": (
        r"\bmediastinum\b",
        r"\bcardiomediastinum\b",
        r"\bcontours?\b",
        r"\bmediastinal configuration",
        r"\b(?:cardio)?mediastinal silhouettes?\b",  # CheXpert's unanchored phrase also hits "cardiomediastinal"
        r"\bpericardial silhouette",
        r"\bcardiac silhouette and vascularity",
        r"\bmediastinal (?:widening|enlargement)\b",  # mrg
        r"\bwide(?:ned|ning) (?:of )?(?:the )?(?:superior )?mediastinum\b",  # mrg
        r"\bcardiomediastinal (?:shadow|size|structures?)\b",  # mrg
    ),
    "Cardiomegaly": (
        r"\bcardiomegaly\b",
        r"\bthe heart\b",
        r"\bheart size\b",
        r"\bcardiac enlargement\b",
        r"\bcardiac size\b",
        r"\bcardiac shadow\b",
        r"\bcardiac contours?\b",
        r"\bcardiac silhouettes?\b",
        r"\benlarged heart\b",
        r"\bheart\b(?= (?:is|appears|remains|was|seems)\b)",  # mrg: "heart is enlarged" without "the"
        r"\benlarge(?:ment of the|d) (?:cardiac|heart)\b",  # mrg
        r"\bheart enlargement\b",  # mrg: "cardiac enlargement" is CheXpert's
    ),
    "Lung Lesion": (
        r"\bmass(?:es)?\b",
        r"\bmass-?like\b",  # mrg
        r"\bnodular (?:densit(?:y|ies)|opacit(?:y|ies)|opacification)",
        r"\bnodul(?:e|es)\b",
        r"\blump",
        r"\bcavitary lesion",
        r"\bcarcinoma",
        r"\bneoplasm",
        r"\btumou?r",
        r"\blung lesions?\b",  # mrg
        r"\bpulmonary lesions?\b",  # mrg
    ),
    "Lung Opacity": (
        r"\bopaci",
        r"\bdecreased translucency",
        r"\bincreased density",
        r"\bair[- ]?space disease",
        r"\binfiltrat",
        r"\binterstitial (?:marking|pattern|lung)",
        r"\breticular (?:pattern|marking)",
        r"\breticulation",
        r"\bparenchymal scarring",
        r"\bperibronchial thickening",
        r"\bwall thickening",
        r"\bscar",
        r"\bopaque\b",  # mrg: "the right lower lobe is opaque" ("radiopaque" is a word of its own)
    ),
    "Edema": (
        r"\bedema",
        r"\bheart failure\b",  # inside "congestive heart failure" the text is still exactly "heart failure"
        r"\bchf\b",
        r"\bvascular congestion",
        r"\bpulmonary congestion",
        r"\bindistinctness",
        r"\bvascular prominence",
        r"\bvenous congestion",  # mrg
    ),
    "Consolidation": (r"\bconsolidat",),
    "Pneumonia": (
        r"\bpneumonia",
        r"\binfection",
        r"\binfectious process",
        r"\binfectious",
        r"\bpneumonitis\b",  # mrg: MeSH and radiologists file pneumonitis under pneumonia
    ),
    "Atelectasis": (r"\batelecta", r"\bcollapse"),
    "Pneumothorax": (
        r"\b(?:hydro|hemo)?pneumothora(?:x|ces)",  # CheXpert's unanchored phrase hits these too
        r"\bpleural air(?: collections?)?\b",  # mrg
    ),
    "Pleural Effusion": (r"\bpleural fluid", r"\beffusion"),
    "Pleural Other": (
        r"\bpleural thickening",
        r"\bfibrosis",
        r"\bfibrothorax",
        r"\bpleural scar",
        r"\bpleural[- ]?parenchymal scar",
        r"\bpleuro-?parenchymal scar",
        r"\bpleuro-?pericardial scar",
        r"\bpleural plaques?\b",  # mrg
        r"\b(?:apical|pleural) cap(?:s|ping)?\b",  # mrg: apical pleural cap
        r"\bfibrotic\b",  # mrg: CheXpert files "fibrosis" here; "fibrotic changes" says the same
        # mrg: the fissures are pleura ("fissural thickening", "thickening of the minor fissure")
        r"\bfissural thickening\b",
        r"\bthickening (?:of|in|along) the (?:\w+ )?(?:minor |major |horizontal |oblique )?fissures?\b",
    ),
    "Fracture": (r"\bfractur",),
    "Support Devices": (
        r"\bpacer",
        r"\bline\b",
        r"\blines\b",
        r"\bpicc\b",
        r"\btubes?\b",
        r"\bvalves?\b",
        r"\bcatheter",
        r"\bpacemaker",
        r"\bhardware",
        r"\barthroplast",
        r"\bmarkers?\b",
        r"\bicds?\b",
        r"\bdefib",
        r"\bdevices?\b",
        r"\bdrains?\b",
        r"\bplates?\b",
        r"\bscrews?\b",
        r"\bcannula",
        r"\bapparatus",
        r"\bcoils?\b",
        r"\bsupport\b",
        r"\bequipment",
        r"\bmediport",
        r"\bstents?\b",  # mrg
        r"\bport-?a-?cath",  # mrg
        r"\bleads\b(?! to\b)",  # mrg: pacing / monitor leads
        r"\b(?:pacer|pacing|pacemaker|icd|defibrillator) lead\b",  # mrg
        r"\bstimulator",  # mrg
        # mrg: a pacemaker's or defibrillator's generator ("cardiac XXXX generator" once de-identification has
        # removed "pacemaker"), orthopaedic bone anchors and joint prostheses (CheXpert lists arthroplasty)
        r"\bgenerators?\b",
        r"\b(?:bone |suture )?anchors?\b",
        r"\bprosthe(?:sis|ses|tic)\b",
        # mrg: "tip in the SVC" / "tip projecting over the right atrium" describe a line or tube whose name
        # de-identification may have removed ("right chest XXXX with tip in the SVC")
        r"\btips?\b(?= (?:is |are |now )?(?:in|at|projecting|projects|overlying|overlies|over|terminat\w*|near|within|extending|in the region of)\b)",
    ),
}

# Matches of these phrases cancel any overlapping mention of the same observation.
_POSITIONS = (
    r"(?:over|overly|overlying|overlies|projecting over|projects over|in|behind|through|between|"
    r"(?:posterior|anterior|adjacent|lateral|inferior|superior) to) the"
    r"(?: (?:superior|inferior|left|right|middle|mid|lower|upper))*"
)
UNMENTIONS: dict[str, tuple[str, ...]] = {
    # CheXpert generates "{over the, overly the, in the} x {'', superior, left, right} + mention" for the two
    # cardiac observations: "granuloma projecting over the heart" is not about heart size. mrg adds
    # "overlying", "projects over", "behind" and "through".
    "Cardiomegaly": (
        r"\b" + _POSITIONS + r" (?:heart|cardiac (?:silhouette|shadow|contour|size))",
        r"\bthe heart and lungs\b",  # mrg: the two organs together ("the heart and lungs have ..."), not heart size
        r"\b(?:shift|deviation|displacement) of the heart\b",  # mrg: where the heart is, not its size
    ),
    "Enlarged Cardiomediastinum": (
        r"\b" + _POSITIONS + r" (?:mediastinum|cardiomediastinum|mediastinal silhouette|pericardial silhouette)",
        r"\b(?:bone|bony|osseous|diaphragm(?:atic)?|hemidiaphragm|pleural|lung|soft tissue|spine|spinal|aortic|"
        r"tracheal|hilar|breast|rib|vertebral|abdominal|pulmonary|costophrenic)s? contours?\b",  # mrg
        r"\b(?:shift|deviation|displacement) of the (?:heart and (?:the )?)?mediastinum\b",  # mrg: position, not size
    ),
    "Lung Lesion": (r"\bcalcified nodul", r"\bmassengale\b", r"\bsoft tissue mass",
                    r"\blumpectom"),  # mrg: a lumpectomy is a breast operation, not a lump
    "Lung Opacity": (r"\bpleural scar", r"\bpleural[- ]?parenchymal scar", r"\bpleuro-?(?:parenchymal|pericardial) scar"),
    "Pleural Effusion": (r"\bpericardial effusion",),
    "Pleural Other": (r"\bcystic fibrosis\b",),  # mrg: a disease of the airways, not pleural fibrosis
    "Edema": (r"\bsoft[- ]tissue (?:edema|swelling)",),  # mrg: not pulmonary edema
    "Pneumonia": (r"\bgranulomatous (?:infection|disease)",),  # mrg: healed granulomas, not pneumonia
    # mrg: a broken device is not a bone fracture
    "Fracture": (
        r"\b(?:screw|wire|lead|catheter|hardware|plate|rod)s? (?:is |are |was |were |appears? )?fractur",
        r"\bfractur\w* (?:of )?(?:the )?(?:\w+ )?(?:\w+ )?(?:screw|wire|lead|catheter|hardware|plate|rod)s?\b",
        r"\b(?:screw|wire|lead|catheter|hardware|plate|rod) fractur",
    ),
    "Support Devices": (
        r"\bplate-?like\b",  # mrg: "platelike atelectasis"
        r"\b(?:septal|kerley b?|b)[- ]lines\b",  # mrg: interstitial lines ("B-lines"), not devices
        r"\bsuture lines?\b",  # mrg: a surgical suture line
        r"\bline of\b",
        r"\bpleural lines?\b",  # mrg: the visceral pleural line of a pneumothorax
        r"\bmidline\b",
        r"\bskin (?:fold|line)",
        r"\bbreast (?:prosthes[ie]s|implants?)\b",  # mrg: cosmetic implants, not support devices
    ),
}

# Mentions that are uncertain unless negated (CheXpert's post-negation rules match these phrases
# themselves): "vascular congestion" says less than "edema".
HEDGED_MENTIONS: tuple[str, ...] = (
    r"vascular congestion",
    r"pulmonary congestion",
    r"indistinctness",
    r"vascular prominence",
    r"venous congestion",
)

# The exact mention texts that add an uncertain Cardiomegaly mention when positive or uncertain.
HEART_FAILURE_TEXTS: frozenset[str] = frozenset({"chf", "heart failure"})

# Mentions about the size or shape of the cardiac silhouette: "stable", "unchanged" and "borderline" make
# these uncertain (CheXpert's post-negation rules for cardiomediastinal lemmas).
# (mentions that already say "enlarged" or "cardiomegaly" are not about an unchanged normal silhouette)
SILHOUETTE_WORDS = r"^(?!.*(?:enlarg|cardiomegaly)).*(?:cardiomediastin|pericardial|mediastin|contour|configuration|silhouette|size|heart|shadow)"
# CheXpert's rule is "borderline heart size"; "borderline cardiomegaly" stays positive, as in CheXpert.
HEART_SIZE_WORDS = r"\bsize\b"


# ---------------------------------------------------------------------------------------------------
# Cues: the words that negate a mention or make it uncertain, and the direction of their scope.
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cue:
    """One negation/uncertainty trigger.

    Attributes:
        family: ``pseudo`` (looks like a trigger but is not: "not only"), ``pre_uncertain`` (checked first:
            "cannot exclude"), ``negation``, or ``uncertain`` (post-negation uncertainty).
        direction: ``forward`` (the cue precedes the mention: "no effusion"), ``backward`` (it follows:
            "effusion has resolved") or ``both`` ("atelectasis versus pneumonia").
        pattern: the regular expression fragment; it must start with one of ``TRIGGER_WORDS``.
        name: a short label shown by ``explain``.
        example: a report sentence in which this cue decides a label (documentation, and a unit test).
        max_words: the most words allowed between the cue and the mention.
        target: if set, the cue only applies to mentions whose text matches this regex.
        forward_words: a smaller word limit for the forward scope of a ``both`` cue.
        backward_verbs: how many finite verbs a backward scope may cross (1: "the heart IS normal").
        cross_commas: whether the scope may cross a comma (a comma right before the cue is allowed).
        backward_stop: if set, a regex; a cue that follows a mention does not reach it when the regex matches
            between the two ("The cardiac silhouette is enlarged, unchanged": "unchanged" does not hedge the
            stated enlargement, while "stable enlarged contour" stays hedged, as CheXpert's "amod" rule does).
    """

    family: str
    direction: str
    pattern: str
    name: str
    example: str
    max_words: int = 10
    target: str | None = None
    forward_words: int | None = None
    backward_verbs: int = 1
    cross_commas: bool = True
    backward_stop: str | None = None


_MODAL = r"(?:may|might|could|would|can)"
_NORMAL = r"\b(?:normal|unremarkable)\b"
_DIMENSION = r"(?:size|sized|caliber|appearance|configuration|contours?|shape|position|silhouette|morphology)"
_DIMENSIONS_MORE = r"(?:(?:,| and| or|,? and) " + _DIMENSION + r")*"
_DIMENSIONS_TAIL = r"(?: (?:for|in|of) " + _DIMENSION + r"(?:(?:,| and| or|,? and)? " + _DIMENSION + r")*)?\b"
# "normal" right after a linking verb is predicative whatever follows ("heart size is normal lungs are clear")
_AFTER_VERB = r"(?:(?<=\bis )|(?<=\bare )|(?<=\bwas )|(?<=\bwere )|(?<=\bappears )|(?<=\bappear )|(?<=\bremains )|(?<=\bremain )|(?<=\bseems )|(?<=\blooks ))"
_SEEN = r"(?:seen|identified|present|noted|evident|demonstrated|detected|visible|apparent|shown|observed)"

# Order matters only where two patterns can start at the same place: the longer one must come first,
# because the combined regex takes the first alternative that matches ("no new" before "no").
CUES: tuple[Cue, ...] = (
    # --- pseudo-triggers: consume the words so that no shorter trigger fires on them
    # "no change in heart size": silhouette mentions become uncertain (CheXpert), nothing is negated
    Cue("uncertain", "both", r"\bno (?:significant |definite |interval |appreciable |substantial |acute )*(?:change|increase|decrease|progression|worsening)\b(?: (?:in|of) (?:the )?)?",
        "no change", "No change in heart size.", target=SILHOUETTE_WORDS),
    Cue("pseudo", "forward", r"\bnot only\b", "not only", "Not only atelectasis."),
    Cue("pseudo", "forward", r"\bwithout (?:significant |interval )*(?:change|increase|progression)\b", "without change",
        "Left effusion without change."),
    Cue("pseudo", "forward", r"\bgram[- ]negative\b", "gram negative", "Gram-negative pneumonia."),
    # --- pre-negation uncertainty (checked before negation)
    # any adverb: "cannot entirely / confidently / reliably exclude" (mrg: CheXpert's rule has no adverb slot)
    Cue("pre_uncertain", "forward", r"\bcan ?not (?:\w+ly )?(?:exclude|rule out)\b",
        "cannot exclude", "Cannot exclude a small effusion."),
    # mrg: also after its subject, close by ("pulmonary edema is difficult to entirely exclude")
    Cue("pre_uncertain", "both", r"\b(?:difficult|unable|hard) to (?:\w+ly )?(?:exclude|rule out)\b",
        "difficult to exclude", "Pulmonary edema is difficult to entirely exclude.", max_words=1, forward_words=10),
    Cue("pre_uncertain", "forward", r"\bno evidence to rule out\b", "no evidence to rule out",
        "No evidence to rule out pneumothorax."),
    Cue("pre_uncertain", "forward", r"\bno new (?:areas? of |foci of |focus of )?", "no new", "No new consolidation."),
    Cue("pre_uncertain", "backward", r"\b(?:can ?not|could not|may not|not) (?:be )?(?:\w+ly )?(?:excluded|ruled out)\b",
        "not excluded", "Pneumonia is not excluded."),
    # --- uncertainty phrases that start with "not" (they must win over the negation "not seen")
    Cue("uncertain", "backward", r"\bnot (?:(?:well|clearly|optimally|adequately)[- ])?(?:visualized|evaluated|assessed|appreciated)\b",
        "not well seen", "The left costophrenic effusion is not well visualized."),
    # "not well-seen" is hyphenated as often as not
    Cue("uncertain", "backward", r"\bnot (?:well|clearly)[- ](?:seen|demonstrated)\b", "not clearly seen",
        "The nodule is not well-seen on today's study."),
    # --- negation
    Cue("negation", "both", r"\bno longer\b(?: (?:seen|visualized|present|evident|identified|noted|demonstrated|visible|apparent)\b)?",
        "no longer", "The effusion is no longer seen."),
    # "no pleural line to suggest pneumothorax": the words between "no" and "to suggest" are inside the cue
    Cue("negation", "forward", r"\bno (?:[\w-]+,? ){1,6}?to (?:suggest|indicate|explain)\b", "no X to suggest",
        "There is no blunting to suggest a pleural effusion."),
    Cue("negation", "forward", r"\b(?:no|without) (?:definite |obvious |convincing |(?:radiographic |radiologic |x-?ray )?(?:evidence|signs?|findings?|features?) (?:of|for|to suggest) )+",
        "no evidence of", "No evidence of pneumothorax."),
    Cue("negation", "forward", r"\b(?:no|without) (?:focus|foci|areas?|development) of\b", "no focus of",
        "No focus of consolidation."),
    Cue("negation", "forward", r"\bno\b", "no", "No pleural effusion or pneumothorax."),
    Cue("negation", "forward", r"\bwithout\b", "without", "Lungs are clear without consolidation."),
    Cue("negation", "forward", r"\bnegative for\b", "negative for", "Negative for pneumothorax."),
    Cue("negation", "forward", r"\b(?:free|clear) of\b", "free of", "The lungs are free of consolidation."),
    Cue("negation", "forward", r"\brather than\b", "rather than", "Likely scarring rather than pneumonia."),
    Cue("negation", "forward", r"\b(?:absence|resolution|disappearance|removal|drainage|clearing|history) of\b",
        "resolution of", "Interval resolution of the left effusion."),
    Cue("negation", "forward", r"\b(?:to|or) (?:exclude|rule out)\b", "to exclude", "Follow-up to exclude pneumonia."),
    Cue("negation", "forward", r"\brule out\b", "rule out", "Rule out pneumothorax."),
    Cue("negation", "backward", r"\bupper limits? of normal\b", "upper limits of normal",
        "Heart size is at the upper limits of normal."),
    Cue("negation", "backward", r"\bwithin (?:the )?normal limits" + _DIMENSIONS_TAIL + r"|\bwnl\b", "within normal limits",
        "The cardiomediastinal silhouette is within normal limits for size and contour."),
    # "normal size and contour": the dimension words are part of the cue (so "contour" is not a finding),
    # and the cue reaches its subject before it or, close by, after it ("normal size of the heart").
    # "... leads show normal size and configuration of the cardiac silhouette": with "of", the subject follows
    Cue("negation", "forward", _NORMAL + r"(?: (?:in|for|of))? " + _DIMENSION + _DIMENSIONS_MORE + r" of\b",
        "normal size of", "Normal size and configuration of the cardiac silhouette.", max_words=3),
    Cue("negation", "both", _NORMAL + r"(?: (?:in|for|of))? " + _DIMENSION + _DIMENSIONS_MORE + r"\b",
        "normal size", "Heart and mediastinum of normal size and contour.", forward_words=3),
    # "normal" is predicative ("the heart is normal") when no noun follows it, attributive ("normal heart
    # size") when one does, and both when "and" follows ("is normal and stable silhouette")
    # mrg: "heart size normal in LV contour" negates both sides, as "normal and" does
    Cue("negation", "both", _NORMAL + r"(?= in\b)", "normal in", "Heart size normal in LV contour.", forward_words=3),
    Cue("negation", "backward", _NORMAL + r"(?= *(?:$|[,.;:]|(?:for|limits|overall|except|without|with|but)\b))"
        r"|" + _AFTER_VERB + _NORMAL, "is normal", "The heart is normal."),
    Cue("negation", "both", _NORMAL + r"(?= and\b)", "normal and", "Normal and stable cardiac silhouette.", max_words=6),
    Cue("negation", "backward", r"\b(?:maintained|preserved)\b", "preserved", "Mediastinal contours are maintained.",
        target=SILHOUETTE_WORDS),
    Cue("negation", "forward", _NORMAL + r"(?: appearing)?", "normal", "Normal heart size.", max_words=6),
    Cue("negation", "backward", r"\bnot (?:\w+ly )?(?:enlarged|dilated|widened)\b", "not enlarged", "The heart is not enlarged."),
    Cue("negation", "backward", r"\bnot (?:be |been )?(?:\w+ly )?" + _SEEN + r"\b", "not seen", "A pneumothorax is not seen."),
    Cue("negation", "backward", r"\b(?:resolved|cleared|disappeared)\b", "has resolved", "The left effusion has resolved."),
    Cue("negation", "backward", r"\bremoved\b", "removed", "The chest tube has been removed."),
    Cue("negation", "backward", r"\babsent\b", "absent", "Pneumothorax is absent."),
    Cue("negation", "backward", r"\bnegative\b", "negative", "Lungs are clear, pneumothorax negative."),
    # --- post-negation uncertainty
    Cue("uncertain", "backward", r"\b" + _MODAL + r" (?:also |possibly )?(?:be present|appear|be seen|have this appearance|exist)\b",
        "could be present", "A small effusion could be present."),
    Cue("uncertain", "forward", _MODAL + r" (?:also |possibly |potentially )?(?:be |have been )?(?:represent|reflect|indicate|include|suggest|signify|relate|related|due|secondary|consistent|compatible|caused|the result)\w*(?: to| with| by| of)?\b",
        "may represent", "Opacity which may represent atelectasis."),
    Cue("uncertain", "forward", r"\b" + _MODAL + r"(?: be)?\b", "may be", "This may be pneumonia."),
    # "pneumonia is suspected": predicative when nothing but punctuation or a conjunction follows
    Cue("uncertain", "backward", r"\b(?:suspected|questioned|possible|favou?red|considered)(?= *(?:$|[,.;:]|(?:and|but|or)\b))",
        "is suspected", "Pneumonia is suspected."),
    # mrg: "maybe" is CheXpert's ("maybe due to"), "perhaps" says the same
    Cue("uncertain", "forward", r"\b(?:possible|possibly|probable|probably|presumabl[ey]|presumed|suspect(?:ed)?|suspicious(?: for| of)?|equivocal|indeterminate|uncertain|maybe|perhaps|possibilit(?:y|ies)(?: of)?)\b",
        "possible", "Possible small effusion."),
    Cue("uncertain", "forward", r"\b(?:concern(?:ing)?|suspicion|worrisome|worry) (?:for|of)\b", "concern for",
        "Opacity concerning for pneumonia."),
    Cue("uncertain", "forward", r"\b(?:question(?:able|ably|ed)?|suggestion)(?: of)?\b", "question of", "Question small effusions."),
    # "no pleural line to suggest pneumothorax" stays a negation: the "no X to suggest" cue above swallows its "suggest"
    Cue("uncertain", "forward", r"\bsuggestive of\b|\bsuggest(?:s|ing)?\b", "suggestive of", "Findings suggestive of edema."),
    # the cue starts at "differential" (looking back for "in the"): "in" is too common a word to trigger on
    Cue("uncertain", "backward", r"(?<=\bin the )differential(?: diagnosis)?\b", "in the differential",
        "Pneumonia is in the differential."),
    Cue("uncertain", "forward", r"\b(?:differential|ddx)(?: diagnosis)?(?: includes?| of)?\b", "differential",
        "Differential diagnosis includes pneumonia."),
    Cue("uncertain", "forward", r"\b(?:correlat\w+|clinical correlation)(?: clinically)? (?:for|with)(?: signs?| symptoms?| evidence)?(?: of)?\b",
        "correlate for", "Correlate clinically for pneumonia."),
    Cue("uncertain", "forward", r"\b(?:favou?r(?:ed|s|ing)?|consider(?:ed)?)\b", "favor", "Favor atelectasis."),
    Cue("uncertain", "forward", r"\b(?:evaluation|assessment) (?:for|of)\b", "evaluation for",
        "Evaluation for pneumothorax is limited by rotation."),
    Cue("uncertain", "forward", r"\bsecondary to\b", "secondary to", "Effusion secondary to heart failure."),
    Cue("uncertain", "forward", r"\bless likely\b", "less likely", "Less likely pneumonia."),
    Cue("uncertain", "forward", r"\bobscur(?:ing|es|ation of)\b", "obscuring", "Overlying soft tissue obscuring a nodule."),
    Cue("uncertain", "backward", r"\b(?:poorly|incompletely|suboptimally) (?:evaluated|visualized|assessed|seen)\b",
        "poorly evaluated", "The retrocardiac region is poorly evaluated, atelectasis poorly evaluated."),
    Cue("uncertain", "both", r"\bobscured\b", "obscured", "The left effusion is obscured."),
    # "x or y" and "x versus y" reach the conjuncts next to them, not across commas ("cardiomegaly, aortic
    # ectasia or tortuosity" leaves cardiomegaly alone)
    Cue("uncertain", "both", r"\b(?:versus|vs\.?)", "versus", "Atelectasis versus pneumonia.", max_words=3,
        backward_verbs=0, cross_commas=False),
    Cue("uncertain", "both", r"\bor\b", "or", "Scarring or atelectasis at the left base.", max_words=3, backward_verbs=0,
        cross_commas=False),
    # stable/unchanged cardiomediastinal silhouette, heart size ... (after negation: "stable normal heart size" is negative)
    Cue("uncertain", "both", r"\b(?:stable|unchanged|not changed|similar to (?:the )?(?:prior|previous|comparison)(?: \w+)?)\b",
        "stable silhouette", "Stable cardiomediastinal silhouette.", max_words=4, target=SILHOUETTE_WORDS,
        cross_commas=False, backward_stop=r"\benlarg"),
    Cue("uncertain", "both", r"\bborderline(?: (?:enlarged|enlargement|large|prominent))?\b", "borderline",
        "Borderline heart size.", target=HEART_SIZE_WORDS),
)

# The words a cue can start with. The labeler first finds these words with one fast regex and then tries
# the cue patterns only there, which is several times faster than scanning with the combined pattern.
TRIGGER_WORDS = (
    "no", "not", "without", "gram", "cannot", "can", "difficult", "unable", "negative", "free", "clear", "rather",
    "absence", "resolution", "disappearance", "removal", "drainage", "clearing", "history", "to", "or", "rule",
    "upper", "within", "wnl", "normal", "unremarkable", "resolved", "cleared", "disappeared", "removed", "absent",
    "may", "might", "could", "would", "possible", "possibly", "probable", "probably", "presumably", "presumable",
    "presumed", "questionable", "questionably", "suspect", "suspected", "suspicious", "equivocal", "indeterminate",
    "uncertain", "concern", "concerning", "suspicion", "worrisome", "worry", "question", "suggestion", "suggestive",
    "suggest", "suggests", "suggesting", "differential", "ddx", "correlate", "correlated", "correlation",
    "correlating", "clinical", "favor", "favour", "favored", "favoured", "favors", "favours", "favoring",
    "favouring", "consider", "considered", "secondary", "less", "obscuring", "obscures", "obscuration", "obscured",
    "questioned", "poorly", "incompletely", "suboptimally", "versus", "vs", "stable", "unchanged", "similar",
    "borderline", "maintained", "preserved", "evaluation", "assessment", "hard", "maybe", "perhaps", "possibility", "possibilities",
)

# Words that end a cue's scope. CheXpert's dependency patterns stop at clause boundaries; these are
# the common clause boundaries of report text. Sentence ends always stop a scope.
TERMINATORS = (
    r"\b(?:but|however|although|though|whereas|while|except|apart from|aside from|other than|besides|which|"
    r"with|yet|since|because|and there)\b|[;:]"
)
# Finite verbs: a forward scope stops at one; a backward scope may cross at most one ("the heart is
# enlarged and the lungs are normal" does not negate the heart).
VERBS = (
    r"\b(?:is|are|was|were|appears?|appeared|remains?|remained|seems?|persists?|projects?|projecting|"
    r"demonstrates?|shows?|measures?|measuring|extends?|terminates?|overlies|overlying|has|have|had|there)\b"
)
