-- Runner tags: a job's tags (a JSON array) and the tags each runner advertises.
ALTER TABLE jobs ADD COLUMN tags TEXT;
ALTER TABLE runners ADD COLUMN tags TEXT;
