"""MSC domains and the deterministic domain classifier."""
from components.data.domains import MSC_BY_DOMAIN, classify, msc_domains


def test_domain_codes_are_real_msc_codes():
    domains = msc_domains()
    assert len(domains) == 61
    assert all(code in domains for code in MSC_BY_DOMAIN.values())
    assert domains["05"]["title"] == "Combinatorics"
    assert domains["11"]["title"] == "Number theory" and domains["97"]["title"] == "Mathematics education"


def test_classifier():
    assert classify("What is 12 + 30?") == "97"
    assert classify("What is the digit sum of 123?") == "11"
    assert classify("In how many ways can one of 3 chess or 4 go players be picked?") == "05"
    assert classify("Solve for x: x - 3 = 4. What is x?") == "08"
    assert classify("Find the remainder when 2^100 is divided by 7.") == "11"
