-- The request a run put to a step's approvers: subject, Markdown body and assigned users, as JSON.
-- The mapped review task reads its own request here, so only invoice ids go through XCom (at
-- 5,000 invoices a round's requests were 838 KB in one XCom), and the text, which quotes client
-- names and line descriptions, is never rendered as an Airflow template.
ALTER TABLE approval_steps ADD COLUMN request TEXT;
