"""A small source data set whose invoice amounts are worked out by hand in the tests.

The seller is in Germany (DE, EUR). October 2026:
- K1 (Kessler, DE, EUR, T&M): developer 100.00/h until 14 Oct, 120.00/h from 15 Oct; architect 150.00/h.
  15.50 h x 100.00 = 1550.00; 4.25 h x 120.00 = 510.00; 2.50 h x 150.00 = 375.00; 3.00 h not billable.
  Net 2435.00, domestic VAT 19 % = 462.65, gross 2897.65 EUR: below 5,000 EUR, approved by policy.
- K2 (Brightwater, GB, GBP, milestones): Phase 1 completed 12000.00; Phase 2 not completed.
  A business outside the EU: export, 0 %, gross 12000.00 GBP; at the policy's fallback rate
  1 EUR = 0.86 GBP that is 13953.49 EUR, above 5,000: waits for finance.
- K3 (Ville de Lyon, FR, public, valid VAT id, retainer 1500.00 monthly): November in advance,
  reverse charge 0 %, gross 1500.00 EUR: public client, waits for finance.
- K4 (Kessler, T&M, cap 1000.00): 12.00 h x 95.55 = 1146.60, capped: -146.60, net 1000.00,
  VAT 19 % = 190.00, gross 1190.00 EUR: reached its cap, waits for finance; 146.60 is an exception.
"""

from __future__ import annotations

from pathlib import Path

FEEDS = {
    "clients": """client_id,name,email,country,currency,vat_id,client_type,payment_terms_days,delivery,language,address_line1,postcode,city
C1,Kessler Logistik GmbH,accounts@kessler.example,DE,EUR,DE123456789,enterprise,30,email,de,Hafenstraße 12,20457,Hamburg
C2,Brightwater Analytics Ltd,ap@brightwater.example,GB,GBP,GB123456789,smb,14,both,en,1 Canal Street,M1 3HE,Manchester
C3,Ville de Lyon,factures@lyon.example,FR,EUR,FR44732829320,public,45,portal,fr,1 Place de la Comédie,69001,Lyon
""",
    "contracts": """contract_id,client_id,billing_type,project_code,signed_at,start_date,end_date,currency,cap_amount,retainer_amount,retainer_interval
K1,C1,time_and_materials,PRJ-1,2025-12-15,2026-01-01,,EUR,,,
K2,C2,milestone,PRJ-2,2026-02-01,2026-02-01,,GBP,,,
K3,C3,retainer,PRJ-3,2026-03-01,2026-03-01,,EUR,,1500.00,monthly
K4,C1,time_and_materials,PRJ-4,2026-01-10,2026-01-10,,EUR,1000.00,,
""",
    "rate_cards": """contract_id,role,hourly_rate,valid_from,valid_to
K1,developer,100.00,2026-01-01,2026-10-14
K1,developer,120.00,2026-10-15,
K1,architect,150.00,2026-01-01,
K4,developer,95.55,2026-01-10,
""",
    "timesheets": """entry_id,contract_id,project_code,employee_id,role,work_date,hours,billable,description
T1,K1,PRJ-1,E1,developer,2026-10-01,8.00,true,API design
T2,K1,PRJ-1,E1,developer,2026-10-14,7.50,true,API build
T3,K1,PRJ-1,E2,developer,2026-10-15,4.25,true,Code review
T4,K1,PRJ-1,E3,architect,2026-10-20,2.50,true,Architecture board
T5,K1,PRJ-1,E1,developer,2026-10-21,3.00,false,Internal training
T6,K4,PRJ-4,E2,developer,2026-10-02,12.00,true,Migration
""",
    "milestones": """milestone_id,contract_id,name,amount,completed_at
M1,K2,Phase 1: discovery,12000.00,2026-10-10
M2,K2,Phase 2: delivery,8000.00,
""",
}


def write_feeds(inbox: Path, **replace: str) -> dict[str, Path]:
    """Write the sample feeds (or replacements for some of them) as ``inbox/<feed>/<feed>.csv``."""
    paths = {}
    for feed, content in {**FEEDS, **replace}.items():
        folder = inbox / feed
        folder.mkdir(parents=True, exist_ok=True)
        paths[feed] = folder / f"{feed}.csv"
        paths[feed].write_text(content, encoding="utf-8")
    return paths
