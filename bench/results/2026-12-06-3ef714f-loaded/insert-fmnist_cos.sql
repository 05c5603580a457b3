INSERT INTO fmnist_cos (id, label, v) SELECT id, label, v FROM fmnist_cos_stage WHERE id = (SELECT nextval('fmnist_cos_stage_seq'));
