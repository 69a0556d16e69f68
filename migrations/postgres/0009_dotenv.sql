-- Handed-over variables: what a job's `artifacts: reports: dotenv` files held when it
-- ended (a JSON list of [name, value] pairs), for the later jobs of its pipeline.
ALTER TABLE jobs ADD COLUMN dotenv TEXT;
