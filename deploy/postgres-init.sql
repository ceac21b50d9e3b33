-- The bridge's own database, next to Synapse's, on the same server.
CREATE DATABASE matrix_bridge;
