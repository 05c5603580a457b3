INSERT INTO fmnist (id, label, v) SELECT id, label, v FROM fmnist_stage WHERE id = (SELECT nextval('fmnist_stage_seq'));
