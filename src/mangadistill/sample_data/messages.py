"""Seeded generator of MangaAssist customer messages with known intents.

A message is composed, not picked: [greeting] [context] core phrasing [context] [closer], with catalog titles,
authors, genres, volume numbers, order numbers, dates and prices slotted in, then seeded noise (text-speak,
typos, lowercase, dropped punctuation, all caps, emoji). About `AMBIGUOUS_SHARE` of the messages mix a
primary and a secondary intent, and carry a soft true distribution instead of a one-hot one.

Every phrasing list (core phrasings per intent, contexts, greetings, closers) is split deterministically into
a "train" pool and a "heldout" pool (every `HELDOUT_EVERY`-th entry is heldout), so an evaluation split can
use phrasings no model was trained on.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from mangadistill.core.redaction import ORDER_DIGITS
from mangadistill.intent.contracts import LABELLED_MESSAGES, MESSAGES
from mangadistill.intent.labels import INTENT_INDEX, INTENTS, RARE_INTENTS

POOLS: tuple[str, ...] = ("train", "heldout", "all")
HELDOUT_EVERY = 4
"""Entry i of every phrasing list is heldout when i % HELDOUT_EVERY == HELDOUT_EVERY - 1 (25%)."""

INTENT_MIX: dict[str, float] = {
    "recommendation": 0.27,
    "product_question": 0.23,
    "order_tracking": 0.16,
    "return_request": 0.10,
    "checkout_help": 0.09,
    "faq": 0.10,
    "account_security": 0.025,
    "escalation": 0.025,
}
"""Target share of each primary intent; a draw perturbs it by a factor exp(N(0, MIX_JITTER))."""
MIX_JITTER = 0.1
RARE_MAX_SHARE = 0.03
"""A rare intent never gets more than floor(RARE_MAX_SHARE * n) of n messages."""

AMBIGUOUS_SHARE = 0.08
PRIMARY_PROB_RANGE = (0.55, 0.70)
SECONDARY_PROB_RANGE = (0.25, 0.40)
MIN_REMAINDER = 0.02
"""Ambiguous true_probs: primary p ~ U(0.55, 0.70), secondary s ~ U(0.25, min(0.40, 1 - p - 0.02)),
remainder 1 - p - s split between two other intents."""

GREETING_PROB = 0.35
ESCALATION_GREETING_PROB = 0.12
CONTEXT_PROB = 0.5
SECOND_CONTEXT_PROB = 0.3
CLOSER_PROB = 0.35
TITLE_SHORTEN_PROB = 0.3
SENTENCE_END = ".!?)…,:"
"""A part ending in one of these needs no full stop before the next part."""


@dataclass(frozen=True)
class NoiseConfig:
    """Per-message probabilities of each kind of noise, applied in this order.

    textspeak_prob: some words become text-speak (you -> u, please -> pls);
    typo_prob: 1-3 typos (adjacent swap, dropped letter, doubled letter, keyboard-neighbour letter);
    lowercase_prob: the whole text lowercased; strip_punct_prob: punctuation removed;
    caps_prob (escalation_caps_prob for escalation): the whole text in capitals; emoji_prob: an emoji added.
    """

    textspeak_prob: float = 0.08
    typo_prob: float = 0.22
    lowercase_prob: float = 0.3
    strip_punct_prob: float = 0.15
    caps_prob: float = 0.02
    escalation_caps_prob: float = 0.12
    emoji_prob: float = 0.08


DEFAULT_NOISE = NoiseConfig()
NO_NOISE = NoiseConfig(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

CORE_PHRASINGS: dict[str, tuple[str, ...]] = {
    "recommendation": (
        "recs like {title}?",
        "something similar to {title}",
        "good {genre} manga?",
        "what should I read after {title}",
        "need a new {genre} series",
        "manga like {title} but shorter",
        "best {genre} manga right now?",
        "Could you recommend a few {genre} series for someone who loved {title}?",
        "Hello, I'm looking for a manga similar to {title}. Any suggestions would be appreciated.",
        "I'd love some recommendations for a completed {genre} series, ideally a short one.",
        "Would you be able to suggest something by {author}, or in the same style?",
        "I'm buying a gift for my nephew who is 13 and likes {genre}. What would you suggest?",
        "Could you suggest a good starter manga for someone who has never read one?",
        "My book club wants to try a manga. Which one would you recommend for adults new to the format?",
        "So I just finished {title} last night and honestly I feel kind of empty now, I need something with "
        "the same vibe, the characters and the {genre} stuff, not too long though because my shelf is full",
        "ok so my sister got me into {title} and I read all of it in like a week and now I want something "
        "else, she says {title2} but I'm not sure, what do you think I should get",
        "I used to read a lot of {genre} manga in high school but stopped, and now I want to get back into "
        "it. what's good these days? doesn't have to be new",
        "I have read {title} and {title2} and liked the first one way more than the second, so maybe that "
        "tells you my taste? looking for the next thing to pick up",
        "every series on your homepage is the same five shonen titles. is there anything actually different, "
        "like {genre}?",
        "i'm so bored of isekai. give me something that isn't isekai please",
        "Hello, please recommend me manga same like {title}, I like very much.",
        "I am search a manga for learn japanese, easy reading, which one you suggest?",
        "Which manga is good for gift to my daughter, she is 10 years, she like animals and {genre}",
        "Please tell me some {genre} manga which is famous, I am new reader",
        "any recs?? finished {title} and need more lol",
        "wat manga shud i read next, i liked {title}",
        "plz rec smth {genre} thats not super long",
        "need new manga ngl {title} ruined everything else for me",
        "sugest me smth like {title} pls",
        "What are your staff picks this month?",
        "what's trending in {genre} right now",
        "Is there anything by the author of {title} that you'd recommend?",
        "I liked the art in {title}, any series with similar artwork?",
        "looking for a short {genre} manga I can finish in a weekend",
        "Recommend me a dark, mature series. I've already read {title}.",
        "What's a good manga for a long flight? something I can binge",
        "My boyfriend loves {title}. What should I get him for his birthday?",
        "Any wholesome slice of life series? I need something comforting",
        "is {title2} worth starting if I liked {title}?",
        "top 3 manga for a total beginner?",
        "I want a manga about a lawyer or a courtroom, does that exist?",
        "any manga about a salaryman or a bank employee? I like workplace stories",
        "I need a series with a strong female lead, ideally {genre}",
        "what would you read if you liked {title} and {title2}",
        "something sad. like really sad. i want to cry. {genre} preferred",
        "Can you suggest a manga with a team manager as the main character? "
        "I loved the sports bits in {title}",
        "give me ur top {genre} picks",
        "I'm building a classroom library for 12-14 year olds, which series would you pick?",
    ),
    "product_question": (
        "is {title} vol {vol} in stock?",
        "how many volumes does {title} have",
        "price of {title} vol {vol}?",
        "is {title} finished or still ongoing",
        "who wrote {title}",
        "Is the {title} box set in English or Japanese?",
        "Does {title} volume {vol} come in hardcover?",
        "Could you tell me whether {title} volume {vol} is currently available?",
        "Hello, I was wondering what age rating {title} has. It's for my 12-year-old.",
        "Could you confirm whether your edition of {title} reads right-to-left like the original?",
        "Is there a deluxe or omnibus edition of {title} available?",
        "May I ask how many pages volume {vol} of {title} has?",
        "Is {title} by {author} complete, or is it still being published?",
        "your site says {title} vol {vol} is in stock but the button is grey. is it in stock or not?",
        "why is {title} listed at {price}?? is that the real price or a mistake",
        "so I'm trying to figure out if I should buy {title} now or wait, does the series end soon or is it "
        "one of those that goes on forever? also how many volumes are out in english so far",
        "I saw {title} on a list and it looks great but I can't tell from the page if it has color pages or "
        "if it's all black and white, and whether it's the same translation as the old release",
        "This manga {title} have how many volume? I want buy all.",
        "Is the {title} in english language or only japanese? I cannot read japanese.",
        "Please, the volume {vol} of {title} when it come back in stock?",
        "{title} is finish story or not finish?",
        "is {title} vol {vol} in stock rn",
        "does {title} have spicy content or is it ok 4 kids",
        "how much 4 the {title} box set",
        "{title} v{vol} back in stock when??",
        "Is {title} appropriate for a 10 year old?",
        "What's the difference between the regular and collector's edition of {title}?",
        "Is volume {vol} of {title} the last one?",
        "Do you sell {title} volume {vol} as an ebook too or only print?",
        "when is the next volume of {title} coming out",
        "Is {title} mostly {genre} or is there a lot of romance too?",
        "What's {title} about? No spoilers, just the premise.",
        "Does the {title} box set include a poster or any extras?",
        "Is the {title} paperback the same size as the other volumes on my shelf?",
        "Do you have {title} in Spanish?",
        "how many copies of {title} vol {vol} do you have left",
        "Does the {title} manga go further than the anime?",
        "Are the {title} volumes you sell new or used?",
        "Which volume of {title} should I start with if I watched the anime?",
        "Is {title} the full-color edition or black and white?",
        "Is {title} volume {vol} the one with the bank heist arc?",
        "in {title}, does the manager character show up in volume {vol} or later?",
        "Does {title} vol {vol} have the bonus chapter?",
        "is there a signed edition of {title} by {author}",
        "Can you check if {title} volumes 1 through {vol} are all available so I can buy them at once?",
        "Is {title} censored in the english version?",
        "what's the page count and trim size for {title} vol {vol}",
    ),
    "order_tracking": (
        "where is my order",
        "where is my order??",
        "order {order} status?",
        "tracking for {order}",
        "has my order shipped yet",
        "my package still hasn't arrived",
        "when will {title} vol {vol} arrive",
        "Hello, could you please let me know the status of order {order}? I placed it on {date}.",
        "Hi there, I was hoping you could check when my order will be delivered. The number is {order}.",
        "Would you mind checking on my preorder of {title} volume {vol}? I haven't had a shipping email yet.",
        "I'd appreciate an update on my shipment, it was supposed to arrive {days} days ago.",
        "Could you tell me which carrier my order was sent with? I can't find a tracking number.",
        "It has been {days} days. WHERE IS MY ORDER",
        "This is ridiculous, my order {order} has said 'processing' for over a week. When is it shipping?",
        "tracking hasn't updated since {date}, what is going on with my package",
        "You said 3-5 days delivery. It's been {days}. Where is it?",
        "so I ordered a bunch of stuff on {date}, including {title} vol {vol}, and I got a shipping email "
        "but the tracking link just says label created and nothing else, it's been a while so I'm wondering "
        "if it actually left the warehouse or not",
        "Hi, I'm going away on {date} and I really need to know if my order will arrive before then, "
        "otherwise I'll need someone to pick it up. Order number {order}.",
        "I got half my order yesterday but the rest isn't here, is it coming separately? there was no note "
        "in the box",
        "Hello, my order {order} is where now? It not arrive yet.",
        "Please check my package, I am waiting since {days} days.",
        "The tracking say delivered but I not receive anything.",
        "When my order will come? I order on {date}.",
        "wheres my order lol its been {days} days",
        "yo did my order ship yet {order}",
        "tracking says delivered but its not here??",
        "my pkg is stuck in transit help",
        "any update on {order} pls",
        "The tracking says delivered but there's nothing at my door.",
        "Can you resend the tracking link for {order}?",
        "My preorder for {title} vol {vol} was supposed to ship on release day, has it shipped?",
        "Is my order delayed? The estimated delivery date has passed.",
        "my order says shipped but the tracking number doesn't work on the carrier's site",
        "The tracking says it was left with the building manager, but he says he doesn't have it. "
        "Can you check where it was dropped off?",
        "Did my order go out yet? I need it by {date} for a birthday.",
        "Why does my tracking show it going to the wrong city?",
        "Has {order} left the warehouse?",
        "can I get an ETA on my order",
        "order {order} - shipped or not?",
        "It has said out for delivery since yesterday morning. Is it lost?",
        "I ordered {qty} items but only one tracking number came through, are they all in one box?",
        "when does my stuff get here",
        "the carrier says my package was returned to sender, what happens to my order now?",
        "Has my {title} box set been dispatched?",
        "No shipping confirmation yet for an order placed {date}. Is that normal?",
        "i moved, did my order go to the old address? order {order}",
    ),
    "return_request": (
        "I want to return {title} vol {vol}",
        "how do I return an item",
        "refund please, wrong book",
        "received a damaged copy, need a replacement",
        "return label for {order}?",
        "can I return an opened box set",
        "Hello, I received {title} volume {vol} with a torn cover. Could I exchange it for a new copy?",
        "I'd like to return an item from order {order}, please. It arrived with water damage.",
        "Would it be possible to get a refund for {title}? I accidentally ordered it twice.",
        "Could you send me a return label? The book I received isn't the one I ordered.",
        "I bought {title} as a gift for my manager and she already owns it. Can I return it unopened?",
        "The volume you sent me is literally falling apart. I want my money back.",
        "You sent me volume {vol2} instead of volume {vol}. Again. Send me the right one.",
        "second time I've gotten a crushed box set. I want a refund, not another replacement",
        "pages are missing from {title} vol {vol}. how is that even possible. refund.",
        "so my order came today and everything looked fine until I opened {title} vol {vol} and there's a "
        "whole section printed upside down, which is kind of funny but I paid {price} for it so I'd like to "
        "swap it out if that's possible",
        "I bought the {title} box set for my son but it turns out he already read most of it at the library, "
        "it's still in the shrink wrap, can I send it back and get store credit or a refund, whichever is "
        "easier",
        "my package arrived with the corner crushed, the box itself was fine but the book inside is bent, "
        "is that something I can return",
        "I receive wrong manga, I order {title} but come other book. How I return?",
        "The book is broken when arrive. I want change to new one please.",
        "Please I want money back, the volume {vol} have damage on cover.",
        "I want return the manga, I still have time? I buy on {date}.",
        "can i return this lol wrong volume",
        "got a dented copy of {title} can u replace it",
        "need 2 return {title} v{vol} how",
        "refund pls the book came wet",
        "The spine on volume {vol} is cracked, can I get a replacement?",
        "I ordered the wrong volume by mistake. Can I swap vol {vol} for vol {vol2}?",
        "Please start a return for order {order}.",
        "My refund for the returned book hasn't shown up. I sent it back on {date}.",
        "Can I exchange {title} for a different series?",
        "The {title} box set arrived without volume {vol}. I'd like a refund for that volume.",
        "I changed my mind about {title}, it's unopened. Can I return it?",
        "Is it possible to return just one book from a bundle?",
        "several pages are blank in the middle of volume {vol}. I need a new copy.",
        "want to send back {qty} books from my last order",
        "How do I get a refund to my bank account instead of store credit?",
        "The book smells like smoke. I'd like to return it.",
        "can you cancel and refund the {title} preorder, I found it elsewhere",
        "Where do I drop off a return? Is there a label I can print?",
        "Item came damaged, I have photos. What do I do to return it?",
        "the shrinkwrap was ripped and the cover was scratched, can I get a new one",
        "got the Japanese edition instead of the English one, please exchange it",
        "Requesting a return authorization for {title} vol {vol}.",
        "I'd like to return a gift I received, I don't have the order number.",
    ),
    "checkout_help": (
        "can't check out",
        "payment keeps failing",
        "promo code not working",
        "my card got declined",
        "checkout button does nothing",
        "how do I use a gift card",
        "Hello, my bank declined my card at checkout even though I have enough funds. "
        "Is there another way to pay?",
        "Could you help me apply the discount code {code}? It says invalid.",
        "I'm trying to pay with PayPal but the window just closes. Could you advise?",
        "Is there a way to split the payment between a gift card and my credit card?",
        "I'd like to change the shipping address in my cart before paying, how do I do that?",
        "I've tried to pay FOUR times and it keeps erroring out. Do you want my money or not?",
        "your checkout page is broken. it keeps emptying my cart",
        "why does the price jump from {price} to way more at checkout?? hidden fees??",
        "the coupon {code} worked yesterday and now it doesn't, what gives",
        "ok so I have {qty} things in my cart including {title} vol {vol} and when I get to the payment step "
        "it just spins forever and then says something went wrong, I tried another browser and same thing, "
        "and I don't want to get charged twice",
        "I got a fraud alert text from my bank when I tried to pay, I said yes it was me, should I just try "
        "again or will it charge me twice?",
        "I'm trying to buy a gift for a friend and ship it to her house but checkout only lets me use my "
        "billing address, is there some setting I'm missing",
        "I cannot pay, the page say error. What I do?",
        "The code of discount is not work, please help.",
        "My card is from other country, can I pay with it?",
        "How I choose express delivery when I pay?",
        "checkout broken?? cant pay",
        "promo code {code} says expired but its not",
        "how 2 pay w apple pay",
        "cart keeps clearing wtf",
        "card declined but i got money lol",
        "Do you accept Apple Pay or Google Pay?",
        "The total at checkout doesn't include the free shipping I qualified for.",
        "My gift card balance isn't showing up at checkout.",
        "Can I pay by bank transfer?",
        "I got charged but the site said the payment failed. Did it go through or not?",
        "How do I remove an item from my cart? The X doesn't work.",
        "I'm at {price} and the bar says I get free shipping but I'm still being charged for shipping.",
        "The site won't accept my zip code at checkout.",
        "Can I check out as a guest without making an account?",
        "Why can't I select express shipping for {title}?",
        "stuck on the 'verifying payment' screen",
        "Can I pay in installments for the {title} box set?",
        "the student discount isn't applying at checkout",
        "got a '3D Secure failed' error when paying",
        "I need an invoice with my company's name for this purchase, can I add it at checkout?",
        "my store credit doesn't show up when I pay",
        "how do i add a second promo code",
        "Can I place an order by phone instead? Your checkout won't load for me.",
    ),
    "faq": (
        "shipping cost to Canada?",
        "do you ship internationally",
        "what's your return policy",
        "customer service hours?",
        "do you have a loyalty program",
        "how long does shipping usually take",
        "Could you tell me whether you ship to Australia, and roughly how long it takes?",
        "Hello, what is your policy on preorders? When is my card charged?",
        "I'd like to know if you offer gift wrapping.",
        "Do you have a physical store I can visit, or are you online only?",
        "Could you explain how your points program works?",
        "why is shipping so expensive? what's the actual policy here",
        "Your site doesn't say anywhere how long returns are accepted. How many days do I have?",
        "seriously, is there no phone number for this store?",
        "I'm new here and trying to understand how things work, like do preorders ship on release day or "
        "after, and do you combine shipping if I order a few things on different days",
        "I'm planning to buy a lot of manga for my classroom library and wondering if you do any kind of "
        "educator discount or bulk pricing, I couldn't find it on the site",
        "my friend said you price match other stores, is that true? I'd rather buy from you if so",
        "You send to Germany? How much cost the shipping?",
        "What is the time for delivery to Brazil please?",
        "Is possible to pay in euro?",
        "You have store in Tokyo or only internet?",
        "do u ship 2 uk",
        "u guys do free shipping?",
        "is there a student discount or nah",
        "wen do preorders get charged",
        "Do you sell gift cards?",
        "Are your manga official licensed English releases?",
        "How do I contact customer service by phone?",
        "Do you offer price adjustments if something goes on sale after I buy it?",
        "What's the minimum order for free shipping?",
        "Do you buy used manga?",
        "Do you offer a subscription that sends new volumes of a series automatically?",
        "what day of the week do new releases go up on the site",
        "Do you have a newsletter for restock alerts?",
        "What payment methods do you accept?",
        "How do you protect customers from fraud? Is it safe to save my card on the site?",
        "Do you ship to PO boxes?",
        "Can I pick up my order in store?",
        "Who do I talk to about wholesale pricing for my comic shop? Is there a partnerships manager?",
        "Do you ship on bank holidays?",
        "Are prices on the site in USD?",
        "Do you charge sales tax?",
        "how does the 'notify me' button work for out of stock books?",
        "What's the cutoff time for same-day dispatch?",
        "Do you have an app?",
    ),
    "account_security": (
        "I think my account was hacked",
        "password reset email not arriving",
        "someone changed my email",
        "can't log in, 2FA code not coming",
        "there's an order on my account I didn't place",
        "unknown login alert, what do I do",
        "Hello, I received an email saying my password was changed, but I didn't change it. "
        "Could you lock my account?",
        "I've requested a password reset three times and haven't received any email. "
        "Could you help me get back in?",
        "I got a login notification from a device I don't recognise in another country. "
        "Could you check my account?",
        "Could you help me turn on two-factor authentication? I can't find the setting.",
        "My email address on the account was changed to one I don't own. Please help me recover it.",
        "SOMEONE USED MY ACCOUNT TO BUY STUFF. I did not order {qty} copies of {title}. Lock it now.",
        "your reset link expires before it even reaches my inbox. I'm locked out of my own account",
        "I keep getting 2FA codes I didn't ask for. Is someone trying to break in??",
        "so I tried logging in this morning and it said my password was wrong, which is weird because I use "
        "a password manager, then I got an email saying my email address had been updated, which I "
        "definitely didn't do, so I think someone got in",
        "I noticed a saved address in my account that isn't mine and an order going to it, I don't know if "
        "someone has my password or what but I'm worried they have my card too",
        "I changed phones and now my authenticator app is gone so I can't get the 2FA code, how do I get "
        "back into my account without it",
        "Somebody enter in my account, I see order I not make. Please block.",
        "I not receive the email for change password. I try many times.",
        "My account have new email which is not mine, help please.",
        "The code for login not come to my phone.",
        "acct hacked?? theres orders i didnt make",
        "pw reset email never came",
        "got a login alert from somewhere random, wasnt me",
        "cant get into my acct, 2fa not working",
        "Someone placed an order for {title} with my saved card. I didn't authorize it.",
        "How do I log out of all devices? I think someone has my password.",
        "My account email was changed and I can't log in anymore.",
        "I got a phishing email pretending to be you asking for my password, is my account compromised?",
        "I'd like to delete my saved payment methods, I think my account was accessed.",
        "please reset my password, I'm locked out after too many attempts",
        "there's a new phone number on my account that isn't mine",
        "Did someone log into my account? My wishlist changed and I didn't touch it.",
        "I need to change the email on my account but I no longer have access to the old one.",
        "There's a suspicious order {order} on my account, it's going to an address I don't know.",
        "how do i enable 2 factor",
        "The security code SMS never arrives.",
        "My password stopped working out of nowhere.",
        "I got an email that my account was accessed from a new browser at 3am.",
        "Can you check whether my account was part of a data breach?",
        "someone is using my account, my points balance went to zero",
        "My bank flagged a charge from your store that I didn't make, I think my account here got hacked.",
        "locked out, the recovery email goes to an address i don't use anymore",
        "I want to change my password but the 'forgot password' link gives an error",
    ),
    "escalation": (
        "I want to speak to a manager. Now.",
        "I'm filing a chargeback with my bank if this isn't fixed today.",
        "This is fraud. You took my money and sent nothing.",
        "My lawyer will be in touch.",
        "I'm reporting you to the Better Business Bureau.",
        "I will dispute this charge with my credit card company.",
        "Get me a supervisor, I'm done with the bot.",
        "I've contacted consumer protection about your store.",
        "If I don't get my money back by {date} I'm taking legal action.",
        "You're scamming people. I'm going to report you to the BBB and leave reviews everywhere.",
        "I want to file a formal complaint against your company.",
        "I'm calling my bank to reverse the charge. This is unacceptable.",
        "This is the last time I ask nicely. Manager. Please.",
        "I'm going to sue. Give me the name of your legal department.",
        "I'll be reporting you to the attorney general's office.",
        "I'm opening a dispute on PayPal, you've ignored me for {days} days.",
        "escalate this to someone senior immediately",
        "Is there anyone with actual authority I can speak to? I need a manager to call me.",
        "this is illegal, you charged me twice and refuse to fix it",
        "I will be posting about this on every social media site unless someone contacts me.",
        "i want ur manager NOW",
        "chargeback incoming. enjoy.",
        "Your company stole {price} from me. I'm contacting a lawyer.",
        "I need to speak to a real person, not a chatbot. This is urgent.",
        "I want talk to manager, this is very bad service, I go to the police.",
        "You steal my money, I will complain to the consumer office.",
        "This is the fourth time I'm writing about the same problem. Nobody reads these. "
        "Put a human on this.",
        "I've been going in circles with this assistant for an hour. Let me talk to an actual person.",
        "Stop sending me canned replies. I want someone who can actually fix this.",
        "I have emailed you {qty} times and called twice. Zero response. Unbelievable.",
        "hello?? is anyone there?? i've been waiting {days} days for a reply",
        "I'm done. Absolutely done. Someone needs to call me today.",
        "your 'support' is a joke. get a human on the line",
        "I have been a customer for 6 years and this is how you treat me? I want this handled by a person, "
        "not an FAQ link.",
        "no more automated answers please. a person. any person.",
        "WHY IS NOBODY ANSWERING ME",
        "I keep explaining and keep getting the same useless answer. Transfer me.",
        "Third ticket, same issue, no resolution. I expect a call back from someone senior.",
        "real human please. this bot doesn't understand anything",
        "Can I please talk to a person? I've explained my problem five times already.",
        "u guys keep closing my ticket without fixing anything. i want someone to actually look at it",
        "This has been going on since {date}. I want a name and a direct contact, not another ticket number.",
        "I'm not asking again. Have someone from your team contact me.",
        "I'm so angry I can't even type properly. Get me someone who can help.",
        "how many times do i have to say it, the problem is NOT solved, connect me to an agent",
        "Honestly I'll never shop here again unless someone picks up the phone and sorts this out.",
        "why is there no way to reach a human on this site",
    ),
}
"""Per intent, the core phrasings in mixed registers (terse, polite, angry, rambling, non-native, text-speak).
Slots: {title} {title2} {author} {genre} {vol} {vol2} {order} {date} {price} {days} {qty} {code}."""

CONTEXTS: dict[str, tuple[str, ...]] = {
    "recommendation": (
        "I've read everything by {author} already.",
        "I'm on volume {vol} of {title} and loving it.",
        "My budget is around {price}.",
        "I prefer finished series.",
        "I mostly read {genre}.",
        "It's for a long train commute.",
        "Not too much fan service please.",
        "I'm getting back into manga after a few years.",
        "A box set would be ideal.",
        "The last thing I read was {title}.",
        "I watched the anime of {title} and want more like it.",
        "I'm 30 and want something a bit more grown-up.",
        "Not into horror at all.",
        "english translation obviously",
    ),
    "product_question": (
        "I'm thinking of buying the whole series.",
        "I already have volumes 1 to {vol}.",
        "The product page doesn't say.",
        "It's a gift so I want the nicer edition.",
        "I saw it listed at {price}.",
        "I looked on the website but couldn't find it.",
        "My local bookstore is sold out.",
        "I'm collecting everything by {author}.",
        "I want to know before I order.",
        "It's for my kid.",
        "My shelf is all the old editions.",
        "I'd need it before {date}.",
    ),
    "order_tracking": (
        "Order number is {order}.",
        "I ordered it on {date}.",
        "It was {title} vol {vol} and a couple of other books.",
        "The confirmation email said {days} days.",
        "I paid {price} for express shipping.",
        "The tracking hasn't moved since {date}.",
        "It's a birthday present.",
        "my order number: {order}",
        "I already asked my neighbours.",
        "I was home all day so I didn't miss the courier.",
        "The preorder page said it ships {date}.",
        "I need it before {date}.",
        "First time ordering from you.",
    ),
    "return_request": (
        "Order {order}, delivered on {date}.",
        "I paid {price} for it.",
        "I have photos of the damage.",
        "It's still sealed.",
        "The box looked fine from the outside.",
        "I've kept all the packaging.",
        "It was meant to be a gift.",
        "The rest of the order was fine.",
        "It's volume {vol} of {title}.",
        "I received it {days} days ago.",
        "The corner is bent and the cover is scratched.",
        "I'd prefer a refund over store credit.",
        "It was delivered yesterday.",
    ),
    "checkout_help": (
        "I'm using Chrome on my phone.",
        "My cart is about {price}.",
        "I've tried two different cards.",
        "The error just says 'something went wrong'.",
        "It's the {title} box set I'm trying to buy.",
        "I'm logged in.",
        "I've cleared my cache already.",
        "The code is {code}.",
        "It's a Visa ending in {last4}.",
        "I tried on the app and the website.",
        "I don't want to be charged twice.",
        "I'm trying to order {qty} books.",
        "I'm in Canada if that matters.",
    ),
    "faq": (
        "I'm in the UK.",
        "I live in Australia.",
        "I'm thinking of placing a big order.",
        "I couldn't find it on the help page.",
        "I'm a new customer.",
        "Asking for a friend too.",
        "I order a lot of manga.",
        "My last order from another store took forever.",
        "I want to order {title} but wanted to check first.",
        "I'm planning around {date}.",
        "It wasn't clear on the website.",
        "just curious",
    ),
    "account_security": (
        "This started on {date}.",
        "I haven't logged in for a few weeks.",
        "I use the same password on other sites, unfortunately.",
        "I've already checked my spam folder.",
        "My card is saved on the account.",
        "The order was for {qty} copies of {title}.",
        "I got the alert at 3am.",
        "I'm using the app.",
        "I changed my phone number recently.",
        "The order in question is {order}.",
        "I didn't click any links.",
        "I'm really worried about this.",
    ),
    "escalation": (
        "My order {order} never arrived.",
        "I was charged twice on {date}.",
        "I've been told three different things by three different people.",
        "I've been waiting since {date}.",
        "I sent the book back {days} days ago and still nothing.",
        "The chat keeps sending me to the FAQ page.",
        "My ticket got closed without an answer.",
        "I spent {price} with you and got nothing.",
        "Every reply is copy-paste.",
        "This is about order {order}.",
        "I have screenshots of everything.",
        "I've been a loyal customer for years.",
        "Nobody called me back like I was promised.",
    ),
}
"""Per intent, situation and detail sentences placed before or after the core phrasing."""

GREETINGS: tuple[str, ...] = (
    "hi", "Hello,", "Hi there,", "hey", "Hello MangaAssist,", "good morning", "Good evening,", "hiya",
    "yo", "Dear customer service,", "Hi team,", "helo", "hey there", "Excuse me,", "Hi, quick question.",
    "Hello, I hope you're well.", "sorry to bother you,", "Konnichiwa!", "hey guys", "Greetings,", "hi!!",
    "Good afternoon,", "To whom it may concern,", "ok so", "um hi",
)
CLOSERS: tuple[str, ...] = (
    "thanks", "Thank you!", "Thanks in advance.", "thx", "ty", "Appreciate it.", "Cheers",
    "Have a nice day!", "Kind regards, {name}", "thanks so much!!", "Thank you for your help.", "pls help",
    "Any help is welcome.", "ok thanks bye", "Much appreciated!", "let me know", "please reply soon",
    "Best, {name}", "thank u", "Many thanks.", "lmk", "Regards.", "TIA", "Thanks, {name}",
)
ANGRY_CLOSERS: tuple[str, ...] = (
    "Fix it.", "I'm waiting.", "Unacceptable.", "Reply today.", "Do better.", "Absolutely ridiculous.",
    "Not happy at all.", "I expect a response today.", "Don't ignore this.", "Last warning.", "Sort it out.",
    "Thanks for nothing.",
)
"""Closers for escalation messages instead of CLOSERS."""
CONNECTORS: tuple[str, ...] = (
    "Also,", "also", "oh and", "btw", "And another thing:", "plus", "PS", "One more thing -",
    "On top of that,", "and", "Also while I have you,", "oh also",
)
"""Joins the primary part of an ambiguous message to its secondary part."""

SECONDARY_INTENTS: dict[str, tuple[str, ...]] = {
    "recommendation": ("product_question", "checkout_help", "faq"),
    "product_question": ("recommendation", "checkout_help", "order_tracking", "faq"),
    "order_tracking": ("return_request", "checkout_help", "escalation", "account_security"),
    "return_request": ("order_tracking", "checkout_help", "faq", "escalation"),
    "checkout_help": ("order_tracking", "faq", "account_security", "product_question"),
    "faq": ("checkout_help", "order_tracking", "return_request", "product_question"),
    "account_security": ("order_tracking", "checkout_help", "escalation"),
    "escalation": ("order_tracking", "return_request", "checkout_help", "account_security"),
}
"""Plausible secondary intents of an ambiguous message, per primary intent."""
SECONDARY_MAX_CHARS = 90
"""The secondary part of an ambiguous message is a core phrasing at most this long (before slot filling)."""

NAMES: tuple[str, ...] = ("Sam", "Yuki", "Maria", "J.", "Priya", "Tom", "Kenji", "Ana", "Lena", "Marcus")
PROMO_CODES: tuple[str, ...] = ("MANGA15", "SPRING20", "WELCOME10", "FREESHIP", "OTAKU25", "VOL1HALF")
MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)
WEEKDAYS: tuple[str, ...] = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

TEXTSPEAK: dict[str, str] = {
    "you": "u", "your": "ur", "you're": "ur", "please": "pls", "thanks": "thx", "are": "r", "because": "bc",
    "before": "b4", "tomorrow": "tmrw", "really": "rly", "people": "ppl", "what": "wat", "with": "w/",
    "about": "abt", "okay": "ok", "know": "kno", "for": "4", "to": "2",
}
TEXTSPEAK_WORD_PROB = 0.7
KEYBOARD_ROWS: tuple[str, ...] = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
EMOJI: tuple[str, ...] = ("🙏", "😅", "😭", "📚", "✨", "🥺", "👀", "😊", "❤️", "📦", "🤔", "😩")
ANGRY_EMOJI: tuple[str, ...] = ("😡", "🤬", "😤", "🙄", "💀")

_SLOT = re.compile(r"\{(\w+)\}")
_WORD = re.compile(r"[A-Za-z']+")
_TYPO_WORD = re.compile(r"[A-Za-z]{3,}")
_PUNCT = re.compile(r"[.,!?;:'\"]")
_GREETING_START = re.compile(r"^(hello|hi|hey)\b", re.IGNORECASE)


def _neighbours() -> dict[str, str]:
    """Letters next to each letter on a QWERTY keyboard (same row and the rows above and below)."""
    table: dict[str, str] = {}
    for r, row in enumerate(KEYBOARD_ROWS):
        for c, letter in enumerate(row):
            near = [row[j] for j in (c - 1, c + 1) if 0 <= j < len(row)]
            for other in (r - 1, r + 1):
                if 0 <= other < len(KEYBOARD_ROWS):
                    near += [KEYBOARD_ROWS[other][j] for j in (c - 1, c, c + 1)
                             if 0 <= j < len(KEYBOARD_ROWS[other])]
            table[letter] = "".join(near)
    return table


KEYBOARD_NEIGHBOURS = _neighbours()


def _check_pool(pool: str) -> None:
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")


def _pool_slice(items: Sequence[str], pool: str) -> list[tuple[int, str]]:
    """(index, item) pairs of `items` that belong to `pool`; index is the position in the full list."""
    _check_pool(pool)
    if pool == "all":
        return list(enumerate(items))
    want_heldout = pool == "heldout"
    return [(i, item) for i, item in enumerate(items) if (phrasing_pool(i) == "heldout") == want_heldout]


def phrasing_pool(index: int) -> str:
    """The pool ("train" or "heldout") of entry `index` of any phrasing list."""
    return "heldout" if index % HELDOUT_EVERY == HELDOUT_EVERY - 1 else "train"


def core_phrasings(intent: str, pool: str = "all") -> tuple[str, ...]:
    """The core phrasing templates of `intent` in `pool` ("train", "heldout" or "all")."""
    if intent not in CORE_PHRASINGS:
        raise ValueError(f"unknown intent {intent!r}; expected one of {', '.join(INTENTS)}")
    return tuple(item for _, item in _pool_slice(CORE_PHRASINGS[intent], pool))


def add_typo(word: str, rng: random.Random) -> str:
    """`word` (3+ letters) with one typo: adjacent swap, dropped, doubled or keyboard-neighbour letter."""
    kind = rng.choice(("swap", "drop", "double", "neighbour"))
    swappable = [i for i in range(len(word) - 1) if word[i] != word[i + 1]]
    if kind == "swap" and swappable:
        i = rng.choice(swappable)
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    i = rng.randrange(len(word))
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    if kind == "neighbour" and word[i].lower() in KEYBOARD_NEIGHBOURS:
        near = rng.choice(KEYBOARD_NEIGHBOURS[word[i].lower()])
        return word[:i] + (near.upper() if word[i].isupper() else near) + word[i + 1:]
    return word[:i] + word[i + 1:]


def _add_typos(text: str, rng: random.Random) -> str:
    words = list(_TYPO_WORD.finditer(text))
    if not words:
        return text
    count = min(len(words), rng.choices((1, 2, 3), weights=(0.65, 0.25, 0.10))[0])
    for match in sorted(rng.sample(words, count), key=lambda m: m.start(), reverse=True):
        text = text[:match.start()] + add_typo(match.group(), rng) + text[match.end():]
    return text


def _textspeak(text: str, rng: random.Random) -> str:
    def swap(match: re.Match[str]) -> str:
        short = TEXTSPEAK.get(match.group().lower())
        return short if short is not None and rng.random() < TEXTSPEAK_WORD_PROB else match.group()

    return _WORD.sub(swap, text)


def order_number(rng: random.Random) -> str:
    """A sample order number in the store's format (`core.redaction.ORDER_NUMBER_FORMAT`: "MO-" and 8 digits, as
    customers write it), never the catalog's SKU format (MA-00001)."""
    digits = f"{rng.randint(10 ** (ORDER_DIGITS - 1), 10 ** ORDER_DIGITS - 1)}"
    return rng.choice(("MO-{}", "#MO-{}", "mo{}", "MO {}", "#MO{}", "#{}")).format(digits)


def apply_noise(text: str, intent: str, rng: random.Random, noise: NoiseConfig = DEFAULT_NOISE) -> str:
    """Apply each kind of noise in `noise` with its probability; every draw is made whatever the config,
    so two configs give the same text wherever their decisions agree."""
    draws = [rng.random() for _ in range(6)]
    textspeak_rng, typo_rng = random.Random(rng.random()), random.Random(rng.random())
    emoji = rng.choice(ANGRY_EMOJI if intent == "escalation" else EMOJI)
    caps_prob = noise.escalation_caps_prob if intent == "escalation" else noise.caps_prob
    if draws[0] < noise.textspeak_prob:
        text = _textspeak(text, textspeak_rng)
    if draws[1] < noise.typo_prob:
        text = _add_typos(text, typo_rng)
    if draws[2] < noise.lowercase_prob:
        text = text.lower()
    if draws[3] < noise.strip_punct_prob:
        text = re.sub(r"\s+", " ", _PUNCT.sub("", text)).strip() or text
    if draws[4] < caps_prob:
        text = text.upper()
    if draws[5] < noise.emoji_prob:
        text = f"{text} {emoji}"
    return text


def _check_titles(titles: Sequence[dict]) -> None:
    if not titles:
        raise ValueError("titles: need at least one catalog record (title, authors, genres, volumes)")
    for i, record in enumerate(titles):
        for key in ("title", "authors", "genres", "volumes"):
            if key not in record:
                raise ValueError(f"titles[{i}]: missing key '{key}' (a catalog record needs title, authors, "
                                 f"genres, volumes; found {', '.join(sorted(record))})")
        if not str(record["title"]).strip():
            raise ValueError(f"titles[{i}]: empty title")
    if not any(record["authors"] for record in titles) or not any(record["genres"] for record in titles):
        raise ValueError("titles: no record has any authors or no record has any genres")


@dataclass(frozen=True)
class _SlotSource:
    titles: Sequence[dict]
    all_authors: tuple[str, ...]
    all_genres: tuple[str, ...]

    @classmethod
    def from_titles(cls, titles: Sequence[dict]) -> _SlotSource:
        authors = tuple(sorted({a for record in titles for a in record["authors"]}))
        genres = tuple(sorted({g for record in titles for g in record["genres"]}))
        return cls(titles, authors, genres)

    def draw(self, rng: random.Random) -> dict[str, str]:
        """One value for every slot, the title-bound ones (author, genre, volume) from one catalog record."""
        record = rng.choice(self.titles)
        other = rng.choice(self.titles)
        volumes = max(1, int(record["volumes"] or 1))
        vol = rng.randint(1, volumes)
        vol2 = rng.choice([v for v in range(1, volumes + 1) if v != vol] or [vol + 1])
        order = order_number(rng)
        return {
            "title": _shorten_title(str(record["title"]), rng),
            "title2": _shorten_title(str(other["title"]), rng),
            "author": rng.choice(list(record["authors"]) or self.all_authors),
            "genre": rng.choice(list(record["genres"]) or self.all_genres).lower(),
            "vol": str(vol),
            "vol2": str(vol2),
            "order": order,
            "date": _draw_date(rng),
            "price": rng.choice(("${}.99", "${}", "{}.99 USD", "${}.50")).format(rng.randint(8, 140)),
            "days": str(rng.randint(3, 30)),
            "qty": str(rng.randint(2, 6)),
            "code": rng.choice(PROMO_CODES),
            "last4": f"{rng.randint(0, 9999):04d}",
            "name": rng.choice(NAMES),
        }


def _shorten_title(title: str, rng: random.Random) -> str:
    """People often write only the part of a title before the colon."""
    head = title.split(":")[0].strip()
    return head if head and rng.random() < TITLE_SHORTEN_PROB else title


def _draw_date(rng: random.Random) -> str:
    day = rng.randint(1, 28)
    month = rng.randrange(12)
    suffix = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd"}.get(day, "th")
    return rng.choice((
        f"{MONTHS[month]} {day}", f"{month + 1}/{day}", f"the {day}{suffix}", rng.choice(WEEKDAYS),
        f"{MONTHS[month][:3]} {day}{suffix}", f"{day}.{month + 1}.",
    ))


def _fill(template: str, slots: dict[str, str]) -> str:
    return _SLOT.sub(lambda m: slots[m.group(1)], template)


def _ends_sentence(text: str) -> bool:
    return text.rstrip().endswith(tuple(SENTENCE_END))


def _join(parts: Sequence[str], rng: random.Random) -> str:
    """Join sentences with spaces; an unpunctuated sentence gets a full stop half of the time."""
    out = ""
    for part in parts:
        if out and not _ends_sentence(out) and rng.random() < 0.5:
            out += "."
        out = f"{out} {part}" if out else part
    return out


def _lower_first(text: str) -> str:
    """Lowercase the first letter unless it starts an acronym or the word "I"."""
    return text[0].lower() + text[1:] if len(text) > 1 and text[1].islower() else text


@dataclass(frozen=True)
class _Composer:
    slots: _SlotSource
    pool: str

    def pick(self, items: Sequence[str], rng: random.Random) -> tuple[int, str]:
        return rng.choice(_pool_slice(items, self.pool))

    def compose(self, intent: str, secondary: str | None, rng: random.Random) -> tuple[str, list[str]]:
        """The text of one message and the ids ("intent:index") of the core phrasings it used."""
        slots = self.slots.draw(rng)
        core_index, core = self.pick(CORE_PHRASINGS[intent], rng)
        core_ids = [f"{intent}:{core_index}"]
        parts = [_fill(core, slots)]
        if rng.random() < CONTEXT_PROB:
            for _ in range(1 + (rng.random() < SECOND_CONTEXT_PROB)):
                context = _fill(self.pick(CONTEXTS[intent], rng)[1], slots)
                if rng.random() < 0.5:
                    parts.insert(0, context)
                else:
                    parts.append(context)
        if secondary is not None:
            short = [(i, t) for i, t in _pool_slice(CORE_PHRASINGS[secondary], self.pool)
                     if len(t) <= SECONDARY_MAX_CHARS and not _GREETING_START.match(t)]
            second_index, second = rng.choice(short)
            core_ids.append(f"{secondary}:{second_index}")
            parts.append(f"{rng.choice(CONNECTORS)} {_lower_first(_fill(second, slots))}")
        greeting_prob = ESCALATION_GREETING_PROB if intent == "escalation" else GREETING_PROB
        if rng.random() < greeting_prob and not _GREETING_START.match(core):
            parts.insert(0, self.pick(GREETINGS, rng)[1])
        if rng.random() < CLOSER_PROB:
            closers = ANGRY_CLOSERS if intent == "escalation" else CLOSERS
            parts.append(_fill(self.pick(closers, rng)[1], slots))
        return _join(parts, rng), core_ids


def _ambiguous_probs(primary: str, secondary: str, rng: random.Random) -> list[float]:
    """primary ~ U(PRIMARY_PROB_RANGE), secondary ~ U(lo, min(hi, 1 - primary - MIN_REMAINDER)),
    the remainder split between two other intents."""
    p = rng.uniform(*PRIMARY_PROB_RANGE)
    s = rng.uniform(SECONDARY_PROB_RANGE[0], min(SECONDARY_PROB_RANGE[1], 1.0 - p - MIN_REMAINDER))
    remainder = 1.0 - p - s
    probs = [0.0] * len(INTENTS)
    probs[INTENT_INDEX[primary]] = p
    probs[INTENT_INDEX[secondary]] = s
    first, second = rng.sample([i for i in INTENTS if i not in (primary, secondary)], 2)
    split = rng.uniform(0.5, 0.8)
    probs[INTENT_INDEX[first]] = remainder * split
    probs[INTENT_INDEX[second]] = remainder * (1.0 - split)
    return probs


def draw_intent_counts(n: int, rng: random.Random) -> dict[str, int]:
    """Primary-intent counts for n messages: INTENT_MIX jittered by exp(N(0, MIX_JITTER)) per intent, rare
    intents capped at floor(RARE_MAX_SHARE * n), the rest shared by largest remainder."""
    jittered = {intent: share * math.exp(rng.gauss(0.0, MIX_JITTER)) for intent, share in INTENT_MIX.items()}
    rare_cap = math.floor(RARE_MAX_SHARE * n)
    counts = {intent: min(round(n * jittered[intent]), rare_cap) for intent in RARE_INTENTS}
    common = [intent for intent in INTENTS if intent not in RARE_INTENTS]
    left = n - sum(counts.values())
    total = sum(jittered[intent] for intent in common)
    exact = {intent: left * jittered[intent] / total for intent in common}
    counts.update({intent: math.floor(exact[intent]) for intent in common})
    by_remainder = sorted(common, key=lambda intent: exact[intent] - counts[intent], reverse=True)
    for intent in by_remainder[: n - sum(counts.values())]:
        counts[intent] += 1
    return {intent: counts[intent] for intent in INTENTS}


def generate_messages(
    n: int,
    seed: int,
    titles: Sequence[dict],
    pool: str = "train",
    id_prefix: str = "m",
    noise: NoiseConfig = DEFAULT_NOISE,
) -> list[dict]:
    """Generate n labelled customer messages, deterministic for (n, seed, titles, pool, noise).

    Each message: message_id ("{id_prefix}-{i:06d}"), text, label (primary intent), secondary_label (str or
    None), true_probs (INTENTS order, sums to 1; one-hot unless ambiguous), ambiguous, pool ("heldout" when
    a core phrasing came from the heldout pool, else "train") and core_ids ("intent:index" of the core
    phrasings used). Phrasings, greetings, contexts and closers all come from `pool`.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    _check_pool(pool)
    _check_titles(titles)
    rng = random.Random(f"messages:{seed}:{pool}")
    counts = draw_intent_counts(n, rng)
    labels = [intent for intent in INTENTS for _ in range(counts[intent])]
    rng.shuffle(labels)
    composer = _Composer(_SlotSource.from_titles(titles), pool)
    messages = []
    for i, label in enumerate(labels):
        message_rng = random.Random(f"message:{seed}:{pool}:{i}")
        is_ambiguous = message_rng.random() < AMBIGUOUS_SHARE
        secondary = message_rng.choice(SECONDARY_INTENTS[label]) if is_ambiguous else None
        text, core_ids = composer.compose(label, secondary, message_rng)
        text = apply_noise(text, label, random.Random(f"noise:{seed}:{pool}:{i}"), noise)
        if secondary is None:
            probs = [1.0 if intent == label else 0.0 for intent in INTENTS]
        else:
            probs = _ambiguous_probs(label, secondary, message_rng)
        messages.append({
            "message_id": f"{id_prefix}-{i:06d}",
            "text": text,
            "label": label,
            "secondary_label": secondary,
            "true_probs": probs,
            "ambiguous": secondary is not None,
            "pool": "heldout" if any(phrasing_pool(int(c.split(":")[1])) == "heldout" for c in core_ids)
            else "train",
            "core_ids": core_ids,
        })
    return messages


TRUTH = pa.schema(
    [
        pa.field("message_id", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("secondary_label", pa.string()),
        pa.field("true_probs", pa.list_(pa.float32()), nullable=False),
        pa.field("ambiguous", pa.bool_(), nullable=False),
    ],
    metadata={b"contract": b"message_truth"},
)
"""The generator's ground truth for messages whose label a model must not see (production log, eval)."""


def _split_seed(seed: int, split: str) -> int:
    return random.Random(f"split:{seed}:{split}").getrandbits(62)


def _table(messages: Sequence[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist([{name: m[name] for name in schema.names} for m in messages], schema=schema)


def build_sample_splits(
    seed: int = 7,
    n_labelled: int = 2000,
    n_production: int = 3000,
    n_eval: int = 800,
    titles: Sequence[dict] | None = None,
) -> dict[str, pa.Table]:
    """The sample data of the intent pipeline.

    labelled: LABELLED_MESSAGES from the train pool (teacher training);
    production_log: MESSAGES from all phrasings, unlabelled; production_truth: TRUTH for it;
    eval: LABELLED_MESSAGES (label = primary intent), half from the heldout pool and half from all phrasings,
    shuffled; eval_truth: TRUTH for it. Message ids carry the split ("lab-", "prod-", "eval-h-", "eval-a-").
    """
    if titles is None:
        from mangadistill.sample_data.catalog import catalog_records

        titles = catalog_records()
    labelled = generate_messages(n_labelled, _split_seed(seed, "labelled"), titles, "train", "lab")
    production = generate_messages(n_production, _split_seed(seed, "production"), titles, "all", "prod")
    n_heldout = (n_eval + 1) // 2
    evaluation = generate_messages(n_heldout, _split_seed(seed, "eval-h"), titles, "heldout", "eval-h")
    evaluation += generate_messages(n_eval - n_heldout, _split_seed(seed, "eval-a"), titles, "all", "eval-a")
    random.Random(f"eval-order:{seed}").shuffle(evaluation)
    return {
        "labelled": _table(labelled, LABELLED_MESSAGES),
        "production_log": _table(production, MESSAGES),
        "production_truth": _table(production, TRUTH),
        "eval": _table(evaluation, LABELLED_MESSAGES),
        "eval_truth": _table(evaluation, TRUTH),
    }
