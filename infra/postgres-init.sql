-- The catalog lives beside Prefect's own database in the stack's PostgreSQL.
CREATE DATABASE catalog OWNER oldphoto;
